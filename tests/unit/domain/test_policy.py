"""The 2FA policy decision: required when enabled for the user or any of their groups."""

from __future__ import annotations

from twofa.domain.policy import PolicyDecision, second_factor_policy


def test_not_required_without_user_or_group_switch() -> None:
    decision = second_factor_policy(False, [])
    assert decision == PolicyDecision(
        False, "2FA is not enabled for the user or any of their groups"
    )


def test_required_when_enabled_for_the_user() -> None:
    decision = second_factor_policy(True, [])
    assert decision.required
    assert decision.reason == "enabled for the user"


def test_user_switch_is_the_reason_even_with_groups() -> None:
    decision = second_factor_policy(True, ["staff"])
    assert decision.required
    assert decision.reason == "enabled for the user"


def test_required_via_a_group_names_the_group() -> None:
    decision = second_factor_policy(False, ["jira-admins"])
    assert decision.required
    assert decision.reason == "enabled via group jira-admins"


def test_several_groups_are_named_in_a_stable_order() -> None:
    decision = second_factor_policy(False, iter(["zeta", "alpha", "mid"]))
    assert decision.required
    assert decision.reason == "enabled via group alpha, mid, zeta"


def test_decision_is_a_frozen_value() -> None:
    assert second_factor_policy(False, ["a"]) == second_factor_policy(False, ("a",))
    assert hash(second_factor_policy(True, [])) == hash(
        PolicyDecision(True, "enabled for the user")
    )

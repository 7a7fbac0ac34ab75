"""The 2FA policy decision: required when enabled for the user or any of their groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twofa.domain.policy import (
    GraceStatus,
    PolicyDecision,
    enrolment_grace,
    second_factor_policy,
)


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


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_no_grace_configured_means_enrol_now() -> None:
    assert enrolment_grace(0, 0, 0, None, NOW) == GraceStatus(False)


def test_postponements_count_down_then_stop() -> None:
    assert enrolment_grace(2, 0, 0, None, NOW) == GraceStatus(True, 2, None)
    assert enrolment_grace(2, 0, 1, NOW, NOW) == GraceStatus(True, 1, None)
    assert enrolment_grace(2, 0, 2, NOW, NOW).may_postpone is False


def test_grace_days_run_from_the_first_postponement() -> None:
    assert enrolment_grace(0, 3, 0, None, NOW) == GraceStatus(True, None, 3)
    later = NOW + timedelta(days=2, hours=1)
    assert enrolment_grace(0, 3, 1, NOW, later) == GraceStatus(True, None, 1)
    assert enrolment_grace(0, 3, 1, NOW, NOW + timedelta(days=3)).may_postpone is False


def test_both_limits_apply_together() -> None:
    assert enrolment_grace(5, 1, 1, NOW, NOW + timedelta(days=2)).may_postpone is False
    assert enrolment_grace(1, 10, 1, NOW, NOW).may_postpone is False


def test_an_administrator_always_needs_a_second_factor() -> None:
    decision = second_factor_policy(False, [], everyone=False, admin=True)
    assert decision == PolicyDecision(True, "required for administrators")
    assert second_factor_policy(True, ["ops"], everyone=True, admin=True).reason == (
        "required for administrators"
    )

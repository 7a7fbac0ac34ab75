"""Access rules: first match wins, domains and paths, subjects and networks, fail closed."""

from __future__ import annotations

import ipaddress

import pytest

from twofa.config import AccessRuleSettings
from twofa.domain.access import (
    AccessRequest,
    AccessRule,
    Decision,
    Policy,
    decide,
    domain_matches,
    in_networks,
    rules_from_settings,
)

JIRA = "jira.example.com"
RULES = (
    AccessRule((JIRA,), Policy.BYPASS, paths=("/rest/api/*", "/status")),
    AccessRule((JIRA,), Policy.DENY, paths=("/secure/admin/*",), groups=("contractors",)),
    AccessRule((JIRA,), Policy.ONE_FACTOR, networks=(ipaddress.ip_network("10.0.0.0/8"),)),
    AccessRule(("*.example.com",), Policy.TWO_FACTOR),
)


def ask(
    path: str, ip: str = "203.0.113.9", user: str | None = "alice", groups: tuple[str, ...] = ()
) -> Decision:
    return decide(RULES, Policy.DENY, AccessRequest(JIRA, path, ip, user, groups))


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("jira.example.com", "jira.example.com", True),
        ("jira.example.com", "JIRA.example.com.", True),
        ("jira.example.com", "evil-jira.example.com", False),
        ("*.example.com", "wiki.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "example.com.evil.net", False),
        ("*.example.com", "evilexample.com", False),
    ],
)
def test_domain_patterns(pattern: str, host: str, matches: bool) -> None:
    assert domain_matches(pattern, host) is matches


def test_rest_api_paths_bypass() -> None:
    assert ask("/rest/api/2/issue/X-1", user=None).policy is Policy.BYPASS
    assert ask("/status", user=None).policy is Policy.BYPASS


def test_first_matching_rule_wins_and_the_rest_is_two_factor() -> None:
    decision = ask("/browse/X-1")
    assert (decision.policy, decision.rule) == (Policy.TWO_FACTOR, 3)


def test_a_group_rule_applies_only_to_that_group() -> None:
    assert ask("/secure/admin/users", groups=("contractors",)).policy is Policy.DENY
    assert ask("/secure/admin/users", groups=("staff",)).policy is Policy.TWO_FACTOR


def test_a_subject_rule_asks_an_anonymous_request_to_sign_in_first() -> None:
    decision = ask("/secure/admin/users", user=None)
    assert decision.needs_identity
    assert decision.policy is Policy.ONE_FACTOR


def test_a_trusted_network_gets_its_rule() -> None:
    assert ask("/browse/X-1", ip="10.1.2.3").policy is Policy.ONE_FACTOR
    assert ask("/browse/X-1", ip="not-an-ip").policy is Policy.TWO_FACTOR


def test_nothing_matches_falls_back_to_the_default_which_fails_closed() -> None:
    decision = decide(RULES, Policy.DENY, AccessRequest("other.net", "/", "1.2.3.4", "alice"))
    assert (decision.policy, decision.rule) == (Policy.DENY, None)


def test_double_star_and_star_both_span_slashes() -> None:
    rule = AccessRule((JIRA,), Policy.BYPASS, paths=("/rest/**",))
    assert rule.matches_resource(JIRA, "/rest/api/2/x", "1.2.3.4")
    assert not rule.matches_resource(JIRA, "/restricted", "1.2.3.4")


def test_rules_from_settings_file_shape() -> None:
    [rule] = rules_from_settings(
        [AccessRuleSettings(domain=(JIRA,), policy="one_factor", users=("Alice",))]
    )
    assert rule.policy is Policy.ONE_FACTOR
    assert rule.matches_subject("alice", ())


CASE_RULES = (
    AccessRule((JIRA,), Policy.BYPASS, paths=("/public/*",)),
    AccessRule((JIRA,), Policy.DENY, paths=("/admin/*",)),
    AccessRule((JIRA,), Policy.ONE_FACTOR, paths=("/docs/*",)),
    AccessRule((JIRA,), Policy.TWO_FACTOR),
)


def decided(path: str) -> Policy:
    return decide(CASE_RULES, Policy.DENY, AccessRequest(JIRA, path, "203.0.113.9", "alice")).policy


@pytest.mark.parametrize("path", ["/ADMIN/x", "/Admin/x", "/admin./x", "/ADMIN%20/x", "/admin../x"])
def test_case_and_trailing_dots_do_not_dodge_a_deny_rule(path: str) -> None:
    assert decided(path) is Policy.DENY


@pytest.mark.parametrize("path", ["/PUBLIC/x", "/Public/x", "/public./x"])
def test_case_and_trailing_dots_do_not_widen_a_bypass_rule(path: str) -> None:
    assert decided(path) is Policy.TWO_FACTOR  # another resource to a case-sensitive app


def test_case_does_not_widen_a_one_factor_rule_over_a_two_factor_one() -> None:
    assert decided("/DOCS/x") is Policy.TWO_FACTOR
    assert decided("/docs/x") is Policy.ONE_FACTOR


def test_a_rule_written_in_capitals_is_matched_exactly_and_leniently() -> None:
    rules = (AccessRule((JIRA,), Policy.DENY, paths=("/Secure/*",)),)
    for path in ("/Secure/x", "/secure/x", "/SECURE/x"):
        request = AccessRequest(JIRA, path, "203.0.113.9")
        assert decide(rules, Policy.BYPASS, request).policy is Policy.DENY


def test_a_rule_with_non_ascii_text_matches_the_normal_form_of_its_paths() -> None:
    rule = AccessRule((JIRA,), Policy.DENY, paths=("/wiki/Straße/*",))
    assert rule.matches_resource(JIRA, "/wiki/Stra%C3%9Fe/x", "203.0.113.9")


def test_attack_an_ipv4_client_on_a_dual_stack_socket_dodges_an_ipv4_rule() -> None:
    """`twofa serve --host ::` sees IPv4 clients as `::ffff:a.b.c.d`: still the IPv4 address
    for every network rule, trusted proxy and trusted network."""
    office = [ipaddress.ip_network("10.0.0.0/8")]
    assert in_networks("::ffff:10.1.2.3", office)
    assert not in_networks("::ffff:192.0.2.9", office)
    assert in_networks("::ffff:127.0.0.1", [ipaddress.ip_network("127.0.0.0/8")])
    assert in_networks("::ffff:10.1.2.3", [ipaddress.ip_network("::ffff:10.0.0.0/104")])

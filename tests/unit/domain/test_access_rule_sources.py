"""Which domains a rule may name (only ones twofa protects), and the evaluation order of the
two sources: the settings file's rules, then the console's."""

from __future__ import annotations

import pytest

from twofa.config import AccessRuleSettings
from twofa.domain.access import (
    AccessRequest,
    Policy,
    RuleSource,
    decide,
    domain_pattern_problem,
    with_console_rules,
)

PROTECTED = ("jira.example.com", "*.corp.example.com")


@pytest.mark.parametrize(
    "pattern",
    ["jira.example.com", "JIRA.example.com", "git.corp.example.com", "*.corp.example.com",
     "*.eu.corp.example.com"],
)  # fmt: skip
def test_a_protected_domain_or_one_under_a_protected_wildcard_is_accepted(pattern: str) -> None:
    assert domain_pattern_problem(pattern, PROTECTED) is None


@pytest.mark.parametrize(
    "pattern", ["wiki.example.com", "*.example.com", "*.jira.example.com", "corp.example.com"]
)
def test_a_domain_twofa_does_not_protect_is_refused_naming_the_protected_ones(
    pattern: str,
) -> None:
    problem = domain_pattern_problem(pattern, PROTECTED)
    assert problem is not None
    assert "not one of the protected domains" in problem
    assert "jira.example.com, *.corp.example.com" in problem


@pytest.mark.parametrize("pattern", ["", "jira example.com", "https://jira.example.com", "a.*.b"])
def test_what_is_not_a_host_name_pattern_is_refused(pattern: str) -> None:
    problem = domain_pattern_problem(pattern, PROTECTED)
    assert problem is not None
    assert "is not a host name" in problem


def test_file_rules_decide_before_console_rules() -> None:
    file_rule = AccessRuleSettings(domain=("jira.example.com",), policy="bypass")
    console_rule = AccessRuleSettings(domain=("jira.example.com",), policy="deny")
    rule_set = with_console_rules([file_rule], [(7, console_rule)], version=3)
    decision = decide(rule_set.rules, Policy.DENY, AccessRequest("jira.example.com", "/", "::1"))
    assert decision.policy is Policy.BYPASS
    assert decision.rule == 0
    assert rule_set.origins[1].source is RuleSource.CONSOLE
    assert rule_set.origins[1].rule_id == 7
    assert rule_set.origins[1].label == "console rule 1, id 7"
    assert rule_set.version == 3

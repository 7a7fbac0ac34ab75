"""Does this user need a second factor? The first version: yes when 2FA is enabled for the user
or for any group they belong to. The decision carries its reason, for audit and the console."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyDecision:
    required: bool
    reason: str


def second_factor_policy(
    user_enabled: bool, enabled_groups: Iterable[str], everyone: bool = False
) -> PolicyDecision:
    """`everyone` is the console's enforcement scope "everyone"."""
    if everyone:
        return PolicyDecision(True, "required for everyone")
    if user_enabled:
        return PolicyDecision(True, "enabled for the user")
    groups = sorted(enabled_groups)
    if groups:
        return PolicyDecision(True, f"enabled via group {', '.join(groups)}")
    return PolicyDecision(False, "2FA is not enabled for the user or any of their groups")

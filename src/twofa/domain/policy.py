"""Does this user need a second factor? Yes for an administrator, and when 2FA is enabled for
everyone, for the user or for any group they belong to. The decision carries its reason, for
audit and the console."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PolicyDecision:
    required: bool
    reason: str


def second_factor_policy(
    user_enabled: bool,
    enabled_groups: Iterable[str],
    everyone: bool = False,
    *,
    admin: bool = False,
) -> PolicyDecision:
    """`everyone` is the console's enforcement scope "everyone"; `admin`, an account the
    console is open to (a second factor stands in front of it unless the demo says not)."""
    if admin:
        return PolicyDecision(True, "required for administrators")
    if everyone:
        return PolicyDecision(True, "required for everyone")
    if user_enabled:
        return PolicyDecision(True, "enabled for the user")
    groups = sorted(enabled_groups)
    if groups:
        return PolicyDecision(True, f"enabled via group {', '.join(groups)}")
    return PolicyDecision(False, "2FA is not enabled for the user or any of their groups")


@dataclass(frozen=True)
class GraceStatus:
    """Whether a user who must enrol may still put it off, and how much grace is left."""

    may_postpone: bool
    postponements_left: int | None = None
    days_left: int | None = None


def enrolment_grace(
    postponements_allowed: int,
    days_allowed: int,
    postponements_used: int,
    grace_started_at: datetime | None,
    now: datetime,
) -> GraceStatus:
    """Both limits apply when both are set; with neither, enrolment cannot be put off."""
    if postponements_allowed <= 0 and days_allowed <= 0:
        return GraceStatus(False)
    left = postponements_allowed - postponements_used if postponements_allowed > 0 else None
    days_left = None
    if days_allowed > 0:
        started = grace_started_at or now
        remaining = started + timedelta(days=days_allowed) - now
        days_left = max(
            0, remaining.days + (1 if remaining.seconds or remaining.microseconds else 0)
        )
    allowed = (left is None or left > 0) and (days_left is None or days_left > 0)
    return GraceStatus(allowed, left, days_left)

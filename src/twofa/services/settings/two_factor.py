"""The 2FA rules as the console stores them (Two Factor Settings): which methods users may
use, the backup policy, who must use a second factor, and the grace and remembered-device
periods."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.domain.policy import PolicyDecision, second_factor_policy
from twofa.storage.repositories import ConsoleSettings as ConsoleSettingsRepo
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow

TWO_FACTOR_KEY: Final = "two_factor"


class BackupPolicy(Enum):
    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class Enforcement(Enum):
    SELECTED = "selected"  # only users and groups with 2FA switched on
    EVERYONE = "everyone"


@dataclass(frozen=True)
class TwoFactorConfig:
    methods: tuple[str, ...] = ("duo_push",)
    first_method: str = "duo_push"
    backup: BackupPolicy = BackupPolicy.NONE
    backup_methods: tuple[str, ...] = field(default_factory=tuple)
    enforcement: Enforcement = Enforcement.SELECTED
    grace_postponements: int = 0
    grace_days: int = 0
    remember_device_days: int = 0


def two_factor_config_from_json(value: dict[str, Any]) -> TwoFactorConfig:
    return TwoFactorConfig(
        methods=tuple(value.get("methods", ("duo_push",))),
        first_method=value.get("first_method", "duo_push"),
        backup=BackupPolicy(value.get("backup", "none")),
        backup_methods=tuple(value.get("backup_methods", ())),
        enforcement=Enforcement(value.get("enforcement", "selected")),
        grace_postponements=int(value.get("grace_postponements", 0)),
        grace_days=int(value.get("grace_days", 0)),
        remember_device_days=int(value.get("remember_device_days", 0)),
    )


def two_factor_config_to_json(config: TwoFactorConfig) -> dict[str, Any]:
    return {
        **asdict(config),
        "methods": list(config.methods),
        "backup_methods": list(config.backup_methods),
        "backup": config.backup.value,
        "enforcement": config.enforcement.value,
    }


async def enforced_for_everyone(db: AsyncSession) -> bool:
    """Whether the Two Factor Settings require a second factor from every user."""
    row = await ConsoleSettingsRepo(db).get(TWO_FACTOR_KEY)
    return (
        row is not None
        and two_factor_config_from_json(row.value).enforcement is Enforcement.EVERYONE
    )


async def policy_of(db: AsyncSession, user: UserRow, *, exempt_admins: bool) -> PolicyDecision:
    """Does `user` need a second factor: the one answer for the sign-in, the console, the API
    and My 2FA. `exempt_admins` is the demo's `admins_without_second_factor`."""
    return second_factor_policy(
        user.twofa_enabled,
        await Users(db).group_names(user.id, twofa_only=True),
        everyone=await enforced_for_everyone(db),
        admin=user.is_admin and not exempt_admins,
    )

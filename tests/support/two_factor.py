"""Test helpers for the Two Factor Settings: allow methods the way an admin would, through
the console service of a gateway opened on the same database."""

from __future__ import annotations

from twofa.config import Settings
from twofa.domain.client import NO_CLIENT
from twofa.services.runtime import Gateway
from twofa.services.settings.two_factor import BackupPolicy, TwoFactorConfig


async def allow_methods(
    settings: Settings,
    methods: tuple[str, ...],
    first_method: str,
    backup: BackupPolicy = BackupPolicy.NONE,
    backup_methods: tuple[str, ...] = (),
    remember_device_days: int = 0,
    grace_postponements: int = 0,
) -> None:
    gateway = await Gateway.start(settings)
    try:
        await gateway.console.save_two_factor(
            TwoFactorConfig(
                methods=methods,
                first_method=first_method,
                backup=backup,
                backup_methods=backup_methods,
                remember_device_days=remember_device_days,
                grace_postponements=grace_postponements,
            ),
            "test-admin",
            NO_CLIENT,
        )
    finally:
        await gateway.close()

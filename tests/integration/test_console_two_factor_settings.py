"""The console's Two Factor Settings over real HTTP (which methods, the backup method,
enforcement, grace period, remembered devices), two admins saving at once, and the known
concurrency bugs of the settings store shown as strict xfails."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.admin_sign_in import sign_in_admin
from tests.support.console import (
    ADMIN_PASSWORDS,
    TWO_FACTOR,
    Console,
    field_problem,
    field_value,
    post_two_factor,
    start_console,
)
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway, sign_in
from twofa.config import load_settings
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway
from twofa.services.settings import console as console_module
from twofa.services.settings.console import SettingsRejected
from twofa.services.settings.two_factor import BackupPolicy, TwoFactorConfig


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


# ---- Two Factor Settings ----------------------------------------------------------------


async def test_two_factor_settings_are_saved_shown_and_audited(console: Console) -> None:
    answer = await post_two_factor(console)

    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "Saved." in page
    assert field_value(page, "remember_device_days") == "30"
    assert field_value(page, "grace_days") == "7"
    assert await console.saved_two_factor() == TwoFactorConfig(
        grace_postponements=2, grace_days=7, remember_device_days=30
    )
    [event] = await console.audit("settings_two_factor")
    assert (event.username, event.detail["after"]["remember_device_days"]) == ("admin", 30)


async def test_two_factor_page_offers_duo_push_and_the_registered_methods(
    console: Console,
) -> None:
    page = (await console.client.get(TWO_FACTOR)).text

    assert "Duo Push Notification" in page
    assert re.search(r'value="totp"', page)
    assert not re.search(r'value="totp"[^>]*disabled', page)


@pytest.mark.parametrize("backup", [BackupPolicy.REQUIRED, BackupPolicy.OPTIONAL])
async def test_a_backup_policy_needs_a_backup_method_chosen(
    console: Console, backup: BackupPolicy
) -> None:
    answer = await post_two_factor(console, backup=backup.value, remember_device_days="9")

    assert answer.status_code == 400
    problem = field_problem(answer.text, "backup_methods")
    assert "choose the backup method users set up" in problem
    assert field_value(answer.text, "remember_device_days") == "9"
    assert await console.saved_two_factor() == TwoFactorConfig()


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"methods": []}, "methods", "choose at least one method"),
        ({"methods": ["sms"]}, "methods", "unknown methods: sms"),
        ({"methods": ["duo_push", "carrier_pigeon"]}, "methods", "unknown methods"),
        ({"first_method": "totp"}, "first_method", "must be one of the allowed methods"),
        ({"grace_days": "400"}, "grace_days", "between 0 and 365"),
        ({"grace_postponements": "two"}, "grace_postponements", "a whole number"),
        ({"remember_device_days": "-1"}, "remember_device_days", "a whole number"),
        ({"enforcement": "nobody"}, "enforcement", "choose everyone or selected"),
    ],
)
async def test_bad_two_factor_field_is_explained_next_to_it(
    console: Console, changes: dict[str, str | list[str]], field: str, problem: str
) -> None:
    answer = await post_two_factor(console, **changes)

    assert answer.status_code == 400
    assert problem in field_problem(answer.text, field)
    assert await console.audit("settings_two_factor") == []


async def test_enforcement_everyone_sends_users_without_2fa_to_the_second_factor(
    console: Console,
) -> None:
    await post_two_factor(console, enforcement="everyone")

    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as bob:
        answer = await sign_in(bob, "bob")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/2fa"


# ---- Two nodes -------------------------------------------------------------------------


async def remember_days_shown(client: httpx.AsyncClient) -> str:
    return field_value((await client.get(TWO_FACTOR)).text, "remember_device_days")


async def test_a_save_on_one_node_reaches_another_node_within_about_a_second(
    console: Console,
) -> None:
    database_url = console.settings.database_url
    async with (
        running_gateway(database_url, console.simulator, seed=False) as (other_url, _),
        httpx.AsyncClient(base_url=other_url, timeout=30) as other_node,
    ):
        await sign_in_admin(other_node, console.simulator, "admin2", ADMIN_PASSWORDS["admin2"])
        assert await remember_days_shown(other_node) == "0"  # the other node has it cached

        await post_two_factor(console, remember_device_days="30")

        assert await remember_days_shown(console.client) == "30"  # the saving node: at once
        deadline = time.monotonic() + 3.0
        shown = await remember_days_shown(other_node)
        while shown != "30" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            shown = await remember_days_shown(other_node)
        assert shown == "30"


# ---- Two admins at once -----------------------------------------------------------------


async def test_two_admins_saving_two_factor_settings_at_once_both_are_audited(
    console: Console,
) -> None:
    await post_two_factor(console, remember_device_days="1")
    async with console.signed_in("admin2", ADMIN_PASSWORDS["admin2"]) as admin2:
        answers = await asyncio.gather(
            post_two_factor(console, remember_device_days="10"),
            post_two_factor(console, admin2, remember_device_days="20"),
        )

    assert [answer.status_code for answer in answers] == [303, 303]
    assert (await console.saved_two_factor()).remember_device_days in (10, 20)
    events = await console.audit("settings_two_factor")
    assert sorted(event.username for event in events[1:]) == ["admin", "admin2"]


# ---- ConsoleSettingsService._put: concurrent first saves, the version, rule checks ----


@pytest.fixture
async def service_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with sqlite_database(tmp_path) as url:
        gateway = await Gateway.start(load_settings(environ={}, mode="dev", database_url=url))
        try:
            yield gateway
        finally:
            await gateway.close()


def both_saves_read_before_either_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Holds each save after its read of the section until the other has read it too: the
    interleaving two admins pressing Save at the same moment can produce."""
    barrier = asyncio.Barrier(2)
    read_section = console_module.ConsoleSettingsRepo.get
    waiting_reads = [2]  # the two saves' reads of the section; later reads pass straight on

    async def read_then_wait(self: Any, key: str) -> Any:
        row = await read_section(self, key)
        if waiting_reads[0] > 0:
            waiting_reads[0] -= 1
            await barrier.wait()
        return row

    monkeypatch.setattr(console_module.ConsoleSettingsRepo, "get", read_then_wait)


async def test_two_first_saves_of_a_section_at_once_both_succeed(
    service_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_saves_read_before_either_writes(monkeypatch)

    await asyncio.gather(
        service_gateway.console.save_two_factor(TwoFactorConfig(grace_days=1), "admin", CLI),
        service_gateway.console.save_two_factor(TwoFactorConfig(grace_days=2), "admin2", CLI),
    )

    assert (await service_gateway.console.two_factor()).grace_days in (1, 2)


async def test_every_save_changes_the_settings_version(
    service_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = service_gateway.console
    await console.save_two_factor(TwoFactorConfig(), "admin", CLI)
    before = await console.version()
    both_saves_read_before_either_writes(monkeypatch)

    await asyncio.gather(
        console.save_two_factor(TwoFactorConfig(grace_days=1), "admin", CLI),
        console.save_two_factor(TwoFactorConfig(grace_days=2), "admin2", CLI),
    )

    assert await console.version() == before + 2


async def test_duo_push_cannot_back_itself_up(service_gateway: Gateway) -> None:
    config = TwoFactorConfig(backup=BackupPolicy.REQUIRED, backup_methods=("duo_push",))

    with pytest.raises(SettingsRejected) as rejected:
        await service_gateway.console.save_two_factor(config, "admin", CLI)

    assert "backup_methods" in rejected.value.problems

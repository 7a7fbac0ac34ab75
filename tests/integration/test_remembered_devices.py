"""Remember this device over real HTTP: the admin's days, the cookie, what forgets a device
(the user, the admin, a new password, a 2FA reset, the feature switched off)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_at
from tests.support.clocks import SkippableClock
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, csrf_from, running_gateway, sign_in
from tests.support.totp_flow import enrol_alice, post_code, sign_out
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.services.settings.cache import RECHECK_S

DEVICE_COOKIE = "twofa_device"


@dataclass
class Site:
    client: httpx.AsyncClient
    settings: Settings
    clock: SkippableClock
    secret: str = ""

    async def remember_days(self, days: int) -> None:
        """Saved by another gateway (like the CLI): the running one re-checks its cached
        console settings at most once a second, so move its clock past that before going on."""
        await allow_methods(self.settings, ("totp", "duo_push"), "totp", remember_device_days=days)
        self.clock.skip(RECHECK_S)

    async def sign_in_with_code(self, offset: int, **extra: str) -> httpx.Response:
        """Signs alice in with a code; fails the test unless it is accepted, so a test that
        then finds nothing remembered cannot pass on a sign-in that never happened."""
        await sign_in(self.client, "alice")
        answer = await post_code(self.client, "/2fa/m/totp", code_at(self.secret, offset), **extra)
        assert answer.status_code == 303, answer.text
        return answer


@pytest.fixture
async def site(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Site]:
    clock = SkippableClock()
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator, clock=clock) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        site = Site(client, settings, clock)
        await site.remember_days(30)
        site.secret = await enrol_alice(client)
        await sign_out(client)
        yield site


async def remembered(site: Site) -> bool:
    """Signs alice in with her password only; True if the device let her skip the code."""
    await sign_out(site.client)
    answer = await sign_in(site.client, "alice")
    return str(answer.headers["location"]).startswith("/2fa/after")


async def test_the_verify_page_offers_the_admins_number_of_days(site: Site) -> None:
    await sign_in(site.client, "alice")
    page = await site.client.get("/2fa/m/totp")
    assert "Remember this device for 30 days" in page.text


async def test_a_remembered_device_skips_the_second_factor(site: Site) -> None:
    answer = await site.sign_in_with_code(+1, remember="on")
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if DEVICE_COOKIE in c)
    assert "HttpOnly" in cookie
    assert "Max-Age=2592000" in cookie

    assert await remembered(site)
    assert "Alice Liddell" in (await site.client.get("/")).text


async def test_without_the_tick_nothing_is_remembered(site: Site) -> None:
    answer = await site.sign_in_with_code(+1)
    assert not any(DEVICE_COOKIE in c for c in answer.headers.get_list("set-cookie"))
    assert not await remembered(site)


async def test_a_forged_device_cookie_is_ignored(site: Site) -> None:
    site.client.cookies.set(DEVICE_COOKIE, "forged-token-value")
    assert not await remembered(site)


async def test_forgetting_the_device_on_my_2fa_asks_again(site: Site) -> None:
    await site.sign_in_with_code(+1, remember="on")
    page = await site.client.get("/my-2fa")
    assert "Remembered devices" in page.text
    await site.client.post("/my-2fa/forget-all", data={"csrf_token": csrf_from(page.text)})

    assert not await remembered(site)


async def test_switching_the_feature_off_ignores_remembered_devices(site: Site) -> None:
    await site.sign_in_with_code(+1, remember="on")
    await site.remember_days(0)

    assert not await remembered(site)
    page = await site.client.get("/2fa/m/totp")
    assert "Remember this device" not in page.text


@pytest.mark.parametrize("change", ["password", "reset", "admin_forget"])
async def test_admin_and_password_changes_forget_devices(site: Site, change: str) -> None:
    await site.sign_in_with_code(+1, remember="on")
    gateway = await Gateway.start(site.settings)
    try:
        if change == "password":
            await gateway.accounts.set_password("alice", PASSWORDS["alice"])
        elif change == "reset":
            await gateway.accounts.reset_second_factor("alice")
        else:
            assert await gateway.accounts.forget_devices("alice") == 1
    finally:
        await gateway.close()

    assert not await remembered(site)


async def test_attack_a_stolen_device_cookie_adds_the_thiefs_authenticator(site: Site) -> None:
    """Alice ticks "remember this device"; a thief with her password and a copy of the device
    cookie signs in minutes later and tries to set up an app of their own. The device counts
    as a second factor, never as a recent one: setting up a method asks for a real one."""
    await site.sign_in_with_code(+1, remember="on")
    assert await remembered(site)  # the thief's sign-in, on the copied cookie

    enrol = await site.client.get("/2fa/m/totp/enrol")

    assert enrol.status_code == 303
    assert enrol.headers["location"] == "/2fa/use?step_up=1"

"""Lock-outs as an outsider meets them, over real HTTP on SQLite and PostgreSQL. Wrong passwords
lock a username only for the client network they come from (an IPv4 address, an IPv6 /64), so
an outsider hammering a name, the admin's included, never keeps its owner out; failures from
many networks together (a distributed attack) slow every attempt on the name instead of locking
it, and the Overview, the Status page and `twofa doctor` raise the alarm. The client's network
is the address a trusted proxy (the loopback) puts in X-Forwarded-For."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_attempt_counting import audit_of, throttle_counts
from tests.integration.test_console_status import rows as status_rows
from tests.support.admin_sign_in import sign_in_admin
from tests.support.clocks import SkippableClock
from tests.support.gateway import PASSWORDS, csrf_from, running_gateway, sign_in
from tests.support.user_management import ADMIN, ADMIN_PASSWORD, AdminBrowser, add_admin
from twofa.services.doctor import examine
from twofa.services.runtime import Gateway

pytestmark = pytest.mark.integration
OUTSIDER = "198.51.100.7"  # network A
ALICE_AT_HOME = "192.0.2.10"  # network B
LOCKED = "Too many failed sign-in attempts"


class NotedSleeps(SkippableClock):
    """The system's time, but a slowed sign-in's wait is noted and skipped, not slept."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


@asynccontextmanager
async def console(
    database_url: str,
    simulator: RunningSimulator,
    clock: SkippableClock | None = None,
    **settings: Any,
) -> AsyncIterator[AdminBrowser]:
    """A gateway with alice, bob and the admin `root`, signed in to the console from the
    loopback (no X-Forwarded-For)."""
    async with running_gateway(database_url, simulator, extra=settings, clock=clock) as running:
        base_url, gateway_settings = running
        await add_admin(gateway_settings)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            await sign_in_admin(client, simulator, ADMIN, ADMIN_PASSWORD)
            yield AdminBrowser(client, gateway_settings, base_url)


@asynccontextmanager
async def browser_at(base_url: str, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser whose requests reach the gateway from `address` through a trusted proxy."""
    headers = {"X-Forwarded-For": address}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        yield client


async def guesses(base_url: str, address: str, username: str, count: int) -> list[int]:
    """`count` wrong passwords for `username` from `address`, one after the other."""
    async with browser_at(base_url, address) as client:
        return [(await sign_in(client, username, f"guess {n}")).status_code for n in range(count)]


async def alice_from(base_url: str, address: str) -> httpx.Response:
    async with browser_at(base_url, address) as client:
        return await sign_in(client, "alice", PASSWORDS["alice"])


async def test_an_outsider_hammering_alices_name_does_not_lock_her_out(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        statuses = await guesses(base_url, OUTSIDER, "alice", 20)

        at_home = await alice_from(base_url, ALICE_AT_HOME)
        from_the_outsiders_network = await alice_from(base_url, OUTSIDER)

    assert statuses == [401] * 5 + [429] * 15
    assert at_home.status_code == 303, at_home.text
    assert at_home.headers["location"] == "/2fa"  # the password passed; 2FA comes next
    assert from_the_outsiders_network.status_code == 429  # network A stays locked
    assert LOCKED in from_the_outsiders_network.text
    audit = await audit_of(settings, "alice")
    assert (audit[("login", "bad_password")], audit[("login", "locked")]) == (5, 16)
    assert audit[("login", "password_ok")] == 1
    assert audit[("lockout", "locked")] == 1


async def test_an_outsider_hammering_the_admins_name_does_not_keep_the_admin_out(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with console(database_url, simulator) as admin:
        statuses = await guesses(admin.base_url, OUTSIDER, ADMIN, 20)

        async with httpx.AsyncClient(base_url=admin.base_url, timeout=60) as from_the_office:
            # the password, Duo Push, and the console's overview answers 200
            await sign_in_admin(from_the_office, simulator, ADMIN, ADMIN_PASSWORD)

    assert statuses == [401] * 5 + [429] * 15


async def test_two_addresses_in_one_ipv6_64_share_a_lock_and_the_next_64_does_not(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        statuses = await guesses(base_url, "2001:db8:aa:1::1", "alice", 5)

        same_64 = await alice_from(base_url, "2001:db8:aa:1:ffff:ffff:ffff:fffe")
        next_64 = await alice_from(base_url, "2001:db8:aa:2::1")

    assert statuses == [401] * 5
    assert same_64.status_code == 429
    assert next_64.status_code == 303, next_64.text
    counts = await throttle_counts(settings)
    assert counts["login-user-net:alice|2001:db8:aa:1::/64"] == 6  # locked: the 6th unseen
    assert "login-user-net:alice|2001:db8:aa:2::/64" not in counts  # cleared by the success


async def test_fifty_wrong_passwords_at_once_from_one_network_are_checked_five_times(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        limit = settings.login_failures_per_user
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            page = await client.get("/login")
            form = {"username": "alice", "csrf_token": csrf_from(page.text)}
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/login",
                        data={**form, "password": f"guess {n}"},
                        headers={"X-Forwarded-For": f"2001:db8:bb:1::{n + 1:x}"},
                    )
                    for n in range(50)
                )
            )

        at_home = await alice_from(base_url, ALICE_AT_HOME)

    assert sorted(Counter(r.status_code for r in replies).items()) == [(401, limit), (429, 45)]
    audit = await audit_of(settings, "alice")
    assert audit[("login", "bad_password")] == limit  # checked: never more than the limit
    assert audit[("login", "locked")] == 50 - limit
    assert audit[("lockout", "locked")] == 1
    assert at_home.status_code == 303, at_home.text


async def test_a_distributed_attack_slows_alices_sign_in_and_raises_the_alarm(
    database_url: str, simulator: RunningSimulator
) -> None:
    clock = NotedSleeps()
    limit = 10  # 100 by default: here two networks' worth of wrong passwords
    async with console(
        database_url, simulator, clock, login_failures_per_user_all_networks=limit
    ) as admin:
        before = await admin.client.get("/admin")
        statuses = []
        for network in range(1, 4):  # five wrong passwords each from three networks
            statuses += await guesses(admin.base_url, f"203.0.113.{network}", "alice", 5)
        delays_of_the_attack = list(clock.slept)

        at_home = await alice_from(admin.base_url, ALICE_AT_HOME)

        overview = unescape((await admin.client.get("/admin")).text)
        status = await admin.client.post(
            "/admin/status", data={"csrf_token": await admin.csrf("/admin/status")}
        )
        gateway = await Gateway.start(admin.settings)
        try:
            doctor = {finding.part: finding for finding in await examine(gateway)}
        finally:
            await gateway.close()

    assert statuses == [401] * 15  # slowed, never locked: no network reached its own limit
    assert delays_of_the_attack == [1.0, 2.0, 4.0, 8.0, 16.0]  # doubling, up to the cap
    assert at_home.status_code == 303, at_home.text  # alice waits, then gets in
    assert clock.slept[5:] == [16.0]
    assert "No username is under a distributed password attack." in before.text
    assert "1 username under a distributed password attack" in overview
    assert '<a href="/admin/users?q=alice">alice</a>' in overview
    assert status_rows(status.text)["sign-in attacks"] == "FAILED"
    assert "sign-in attacks" in unescape(status.text).split('id="status-summary">', 1)[1]
    finding = doctor["sign-in attacks"]
    assert finding.state.value == "FAILED"
    assert "1 username under a distributed password attack (alice)" in finding.detail
    audit = await audit_of(admin.settings, "alice")
    assert audit[("sign_in_attack", "slowed")] == 1  # one alert as the limit is passed
    assert audit[("lockout", "locked")] == 3  # each attacking network, on its own


async def test_the_admins_unlock_clears_alices_lock_on_every_network(
    database_url: str, simulator: RunningSimulator
) -> None:
    ipv6_network = "2001:db8:cc:1::1"
    async with console(database_url, simulator) as admin:
        for address in (OUTSIDER, ipv6_network):
            assert await guesses(admin.base_url, address, "alice", 5) == [401] * 5
        locked = (await alice_from(admin.base_url, OUTSIDER)).status_code
        users_page = (await admin.client.get("/admin/users", params={"q": "alice"})).text

        unlocked = await admin.post("/admin/users/unlock", {"username": "alice", "q": "alice"})

        after = [
            (await alice_from(admin.base_url, address)).status_code
            for address in (OUTSIDER, "2001:db8:cc:1::2")
        ]
        counts = await throttle_counts(admin.settings)

    assert locked == 429
    assert "locked until " in users_page
    assert unlocked.headers["location"] == "/admin/users?q=alice&done=unlocked&who=alice"
    assert after == [303, 303]
    assert not [key for key in counts if key.startswith("login-user-net:alice|")]


async def test_a_name_longer_than_any_account_is_refused_not_a_server_error(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        answers = await guesses(base_url, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "a" * 300, 3)

    assert answers == [401] * 3  # the answer a wrong password gets
    assert (await audit_of(settings, "a" * 150))[("login", "bad_password")] == 3

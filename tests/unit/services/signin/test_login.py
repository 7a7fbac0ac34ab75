"""The first factor: password check, policy decision, throttling and audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.unit.services.conftest import BROWSER, PASSWORD, add_user, audit_rows, sign_in
from twofa.clock import FrozenClock
from twofa.config import Mode, Settings
from twofa.domain.client import ClientInfo
from twofa.domain.sign_in_limits import client_network
from twofa.security.hashing_pool import HashingBusy
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginOutcome, LoginResult
from twofa.services.state.lockouts import sign_in_all_networks_key, sign_in_network_key
from twofa.services.state.sessions import Level
from twofa.storage.tables import ThrottleRow


async def test_right_password_signs_in_a_user_without_2fa(gateway: Gateway) -> None:
    user_id = await add_user(gateway, "alice")
    outcome = await sign_in(gateway, "alice")
    assert outcome.result is LoginResult.SIGNED_IN
    assert outcome.session is not None
    assert outcome.session.level is Level.SIGNED_IN
    assert outcome.session.user_id == user_id
    assert outcome.session.next_url == "/app"
    assert await gateway.sessions.load(outcome.token) == outcome.session


async def test_user_with_2fa_needs_a_second_factor(gateway: Gateway) -> None:
    await add_user(gateway, "alice", twofa=True)
    outcome = await sign_in(gateway, "alice")
    assert outcome.result is LoginResult.SECOND_FACTOR
    assert outcome.session is not None
    assert outcome.session.level is Level.AWAITING_SECOND_FACTOR
    rows = await audit_rows(gateway, "login", "alice")
    assert rows[-1].detail["second_factor"] == "enabled for the user"


async def test_group_with_2fa_needs_a_second_factor(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await gateway.accounts.add_group("jira-admins")
    await gateway.accounts.set_membership("jira-admins", "alice", True)
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN
    await gateway.accounts.set_group_policy("jira-admins", True)
    outcome = await sign_in(gateway, "alice")
    assert outcome.result is LoginResult.SECOND_FACTOR
    rows = await audit_rows(gateway, "login", "alice")
    assert rows[-1].detail["second_factor"] == "enabled via group jira-admins"


async def test_wrong_password_and_unknown_user_look_the_same(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    wrong = await sign_in(gateway, "alice", "wrong password")
    unknown = await sign_in(gateway, "nobody", PASSWORD)
    assert wrong == unknown == LoginOutcome(LoginResult.REFUSED)
    outcomes = [(row.username, row.outcome) for row in await audit_rows(gateway, "login")]
    assert outcomes == [("alice", "bad_password"), ("nobody", "bad_password")]


async def test_refused_sign_in_keeps_the_anonymous_session(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    token, anonymous = await gateway.sessions.open(BROWSER)
    await gateway.login.sign_in(anonymous, "alice", "wrong", BROWSER)
    assert await gateway.sessions.load(token) == anonymous


async def test_successful_sign_in_replaces_the_anonymous_session(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    token, anonymous = await gateway.sessions.open(BROWSER)
    outcome = await gateway.login.sign_in(anonymous, "alice", PASSWORD, BROWSER)
    assert outcome.token != token
    assert await gateway.sessions.load(token) is None


async def test_five_failures_lock_the_user_from_that_network(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await add_user(gateway, "alice")
    for _ in range(5):
        assert (await sign_in(gateway, "alice", "wrong")).result is LoginResult.REFUSED
    locked = await sign_in(gateway, "alice", PASSWORD)
    assert locked == LoginOutcome(LoginResult.LOCKED)
    lockouts = await audit_rows(gateway, "lockout", "alice")
    assert len(lockouts) == 1
    assert lockouts[0].detail["key"] == f"login-user-net:alice|{BROWSER.ip}"
    assert lockouts[0].detail["until"] == (clock.now() + timedelta(minutes=15)).isoformat()
    assert (await audit_rows(gateway, "login", "alice"))[-1].outcome == "locked"


async def test_lock_ends_after_the_lockout(gateway: Gateway, clock: FrozenClock) -> None:
    await add_user(gateway, "alice")
    for _ in range(5):
        await sign_in(gateway, "alice", "wrong")
    clock.advance(timedelta(minutes=15))
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN


async def test_success_resets_the_user_counter(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    for _ in range(4):
        await sign_in(gateway, "alice", "wrong")
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN
    for _ in range(4):
        await sign_in(gateway, "alice", "wrong")
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN


async def test_lock_is_per_username_not_case(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    for _ in range(5):
        await sign_in(gateway, "ALICE", "wrong")
    assert (await sign_in(gateway, "alice")).result is LoginResult.LOCKED


@pytest.fixture
async def strict_ip_gateway(database_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    settings = Settings(mode=Mode.DEV, database_url=database_url, login_failures_per_ip=3)
    running = await Gateway.start(settings, clock=clock)
    try:
        yield running
    finally:
        await running.close()


async def test_failures_from_one_address_lock_that_address(strict_ip_gateway: Gateway) -> None:
    gateway = strict_ip_gateway
    await add_user(gateway, "alice")
    for name in ("u1", "u2", "u3"):
        await sign_in(gateway, name, "guess")
    assert (await sign_in(gateway, "alice")).result is LoginResult.LOCKED
    elsewhere = ClientInfo(ip="198.51.100.9", user_agent="other")
    assert (await sign_in(gateway, "alice", client=elsewhere)).result is LoginResult.SIGNED_IN
    lockouts = await audit_rows(gateway, "lockout")
    assert [row.detail["key"] for row in lockouts] == [f"login-ip:{BROWSER.ip}"]


async def test_disabled_user_is_refused(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await gateway.accounts.set_enabled("alice", False)
    assert await sign_in(gateway, "alice") == LoginOutcome(LoginResult.REFUSED)
    await gateway.accounts.set_enabled("alice", True)
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN


async def test_user_without_password_is_refused(gateway: Gateway) -> None:
    await add_user(gateway, "alice", password=None)
    assert await sign_in(gateway, "alice", "") == LoginOutcome(LoginResult.REFUSED)
    assert await sign_in(gateway, "alice", "anything") == LoginOutcome(LoginResult.REFUSED)


async def test_every_attempt_is_audited_with_the_client(gateway: Gateway) -> None:
    await add_user(gateway, "alice", twofa=True)
    await sign_in(gateway, "alice", "wrong")
    await sign_in(gateway, "alice")
    rows = await audit_rows(gateway, "login", "alice")
    assert [row.outcome for row in rows] == ["bad_password", "password_ok"]
    assert {(row.client_ip, row.user_agent) for row in rows} == {(BROWSER.ip, BROWSER.user_agent)}


# ---- lock-outs per network, slowdown for every network -----------------------------------

OUTSIDER = ClientInfo(ip="198.51.100.66", user_agent="outsider")


def from_ip(ip: str) -> ClientInfo:
    return ClientInfo(ip=ip, user_agent="pytest")


async def test_an_outsider_locks_a_name_only_for_their_own_network(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    for _ in range(20):
        await sign_in(gateway, "alice", "guess", client=OUTSIDER)
    assert (await sign_in(gateway, "alice", client=OUTSIDER)).result is LoginResult.LOCKED
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN
    outcomes = [row.outcome for row in await audit_rows(gateway, "login", "alice")]
    assert (outcomes.count("bad_password"), outcomes.count("locked")) == (5, 16)


async def test_ipv6_addresses_of_one_64_share_a_lock(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    for host in range(1, 6):
        await sign_in(gateway, "alice", "guess", client=from_ip(f"2001:db8:1:2::{host:x}"))
    neighbour = from_ip("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert (await sign_in(gateway, "alice", client=neighbour)).result is LoginResult.LOCKED
    next_64 = from_ip("2001:db8:1:3::1")
    assert (await sign_in(gateway, "alice", client=next_64)).result is LoginResult.SIGNED_IN


@pytest.fixture
async def small_limits_gateway(database_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    settings = Settings(
        mode=Mode.DEV,
        database_url=database_url,
        login_failures_per_user_all_networks=10,
        login_slowdown_max_seconds=8,
    )
    running = await Gateway.start(settings, clock=clock)
    try:
        yield running
    finally:
        await running.close()


async def test_a_distributed_attack_slows_the_name_instead_of_locking_it(
    small_limits_gateway: Gateway, clock: FrozenClock
) -> None:
    gateway = small_limits_gateway
    await add_user(gateway, "alice")
    for n in range(15):  # three networks, five wrong passwords each
        await sign_in(gateway, "alice", "guess", client=from_ip(f"198.51.100.{n // 5 + 1}"))
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert (await sign_in(gateway, "alice", client=from_ip("192.0.2.8"))).result is (
        LoginResult.SIGNED_IN
    )
    assert clock.slept[-1] == 8.0
    alerts = await audit_rows(gateway, "sign_in_attack", "alice")
    assert [(row.outcome, row.detail["limit"]) for row in alerts] == [("slowed", 10)]
    assert await gateway.overview.attacked() == ("alice",)
    assert await gateway.accounts.locked_until("alice") is not None  # those three networks


async def test_a_locked_network_counts_nothing_against_every_network(
    small_limits_gateway: Gateway, clock: FrozenClock
) -> None:
    gateway = small_limits_gateway
    await add_user(gateway, "alice")
    for _ in range(50):
        await sign_in(gateway, "alice", "guess", client=OUTSIDER)
    assert clock.slept == []
    assert await audit_rows(gateway, "sign_in_attack") == []


async def test_unlock_clears_the_lock_of_every_network(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await add_user(gateway, "alice|x")  # a name that looks like one of alice's keys
    for _ in range(5):
        await sign_in(gateway, "alice|x", "guess", client=OUTSIDER)
        for client in (OUTSIDER, from_ip("2001:db8::1")):
            await sign_in(gateway, "alice", "guess", client=client)
    assert await gateway.accounts.locked_until("alice") is not None

    assert await gateway.accounts.unlock_user("alice") is True

    assert await gateway.accounts.locked_until("alice") is None
    assert await gateway.accounts.locked_until("alice|x") is not None
    for client in (OUTSIDER, from_ip("2001:db8::2")):
        assert (await sign_in(gateway, "alice", client=client)).result is LoginResult.SIGNED_IN


async def test_attack_a_sign_in_refused_as_busy_counts_no_attempt(gateway: Gateway) -> None:
    """A storm fills the hashing queue: the sign-ins refused unchecked ("busy") give their
    attempts back, so nobody is locked out by passwords that were never checked."""
    await add_user(gateway, "alice")
    assert gateway.hashing is not None
    gateway.hashing.threads, gateway.hashing.queue_limit = 1, 0  # one check at a time

    storm = [sign_in(gateway, "alice", f"wrong guess {n}") for n in range(6)]
    results = await asyncio.gather(*storm, return_exceptions=True)

    checked = [r for r in results if isinstance(r, LoginOutcome)]
    busy = [r for r in results if isinstance(r, HashingBusy)]
    assert len(busy) >= 1
    assert len(checked) + len(busy) == 6
    assert all(outcome.result is LoginResult.REFUSED for outcome in checked)
    # only the checked ones count, on the network and on every network
    key = sign_in_network_key("alice", client_network(BROWSER.ip))
    async with gateway.db.begin() as db:
        counted = {row.key: row.failures for row in await db.scalars(select(ThrottleRow))}
    assert counted[key] == len(checked)
    assert counted[sign_in_all_networks_key("alice")] == len(checked)


async def test_the_password_is_checked_with_no_database_connection_held(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 runs a tenth of a second on purpose: no connection (and on SQLite no lock)
    waits for it."""
    await add_user(gateway, "alice")
    assert gateway.hashing is not None
    held: list[int] = []
    verify = gateway.hashing.verify

    async def watching(password_hash: str | None, password: str) -> bool:
        held.append(gateway.engine.sync_engine.pool.checkedout())
        return await verify(password_hash, password)

    monkeypatch.setattr(gateway.hashing, "verify", watching)
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN
    assert held == [0]


async def test_attack_a_password_changed_during_the_check_is_not_signed_in_with(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin resets a stolen password while the thief's sign-in is being checked: the
    old password, right when it was read, no longer signs in."""
    await add_user(gateway, "alice")
    assert gateway.hashing is not None
    verify = gateway.hashing.verify

    async def admin_acts_meanwhile(password_hash: str | None, password: str) -> bool:
        right = await verify(password_hash, password)
        await gateway.accounts.set_password("alice", "a brand new secret phrase")
        return right

    monkeypatch.setattr(gateway.hashing, "verify", admin_acts_meanwhile)
    assert (await sign_in(gateway, "alice")).result is LoginResult.REFUSED

"""Duo Push when things go wrong, against the real simulator: push rate limits, Duo passcodes
and their throttle, failmode when Duo is down or the keys are wrong, Duo refusals; and one
round trip on PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import RunningSimulator
from tests.support.databases import postgres_database
from tests.unit.services.conftest import (
    BROWSER,
    add_user,
    audit_rows,
    duo_of,
    duo_settings,
    password_session,
    sign_in,
    start_duo_gateway,
)
from twofa.clock import FrozenClock
from twofa.config import FailMode
from twofa.duo import DuoRateLimited
from twofa.services.duo.rules import Bypass, PushState
from twofa.services.runtime import Gateway
from twofa.services.second_factor.outcomes import (
    DuoDown,
    DuoRefused,
    FailOpen,
    SecondFactorError,
)
from twofa.services.signin.login import LoginResult
from twofa.services.state.sessions import Level
from twofa.storage.repositories import DuoEnrolments, Users


def issue_passcode(simulator: RunningSimulator, username: str) -> str:
    answer = simulator.control.post("/_sim/passcodes", json={"username": username})
    answer.raise_for_status()
    return str(answer.json()["passcode"])


def invalid_passcode(simulator: RunningSimulator, username: str) -> str:
    """A well-formed passcode Duo does not currently accept for this user."""
    users = simulator.control.get("/_sim/users").json()
    valid = {code for user in users if user["username"] == username for code in user["passcodes"]}
    rng = random.Random(username)
    while (code := f"{rng.randrange(10**6):06d}") in valid:
        pass
    return code


async def test_fourth_push_within_a_minute_is_refused(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    for _ in range(3):
        await duo.send_push(session, BROWSER)
    with pytest.raises(SecondFactorError, match="Too many push requests"):
        await duo.send_push(session, BROWSER)
    assert len(simulator.pending("alice")) == 3
    clock = duo_gateway.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=61))
    await duo.send_push(session, BROWSER)
    assert len(simulator.pending("alice")) == 4


async def test_rate_limited_push_is_audited(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    for _ in range(3):
        await duo.send_push(session, BROWSER)
    with pytest.raises(SecondFactorError, match="Too many push requests"):
        await duo.send_push(session, BROWSER)
    outcomes = [row.outcome for row in await audit_rows(duo_gateway, "duo_push", "alice")]
    assert outcomes == ["sent", "sent", "sent", "rate_limited"]


async def test_duo_passcode_signs_in_once(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    user_id = await add_user(duo_gateway, "alice", twofa=True)
    login = await sign_in(duo_gateway, "alice")
    assert login.session is not None
    passcode = issue_passcode(simulator, "alice")
    completion = await duo_of(duo_gateway).verify_passcode(login.session, passcode, BROWSER)
    assert completion.session.level is Level.SIGNED_IN
    assert completion.session.user_id == user_id
    assert await duo_gateway.sessions.load(login.token) is None
    assert await duo_gateway.sessions.load(completion.token) == completion.session
    assert (await duo_gateway.accounts.user("alice")).duo_configured
    assert [r.outcome for r in await audit_rows(duo_gateway, "duo_passcode")] == ["allow"]
    with pytest.raises(SecondFactorError, match="not valid"):  # single use
        await duo_of(duo_gateway).verify_passcode(
            await password_session(duo_gateway, "alice"), passcode, BROWSER
        )


@pytest.mark.parametrize("malformed", ["", "abc123", "12345", "12345678901"])
async def test_malformed_passcode_is_refused_without_asking_duo(
    duo_gateway: Gateway, simulator: RunningSimulator, malformed: str
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    with pytest.raises(SecondFactorError, match="not valid"):
        await duo_of(duo_gateway).verify_passcode(session, malformed, BROWSER)
    assert simulator.control.get("/_sim/transactions").json() == []


async def test_wrong_passcodes_are_throttled_after_five(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    for _ in range(5):
        with pytest.raises(SecondFactorError, match="not valid"):
            await duo.verify_passcode(session, invalid_passcode(simulator, "alice"), BROWSER)
    good = issue_passcode(simulator, "alice")
    with pytest.raises(SecondFactorError, match="Too many wrong passcodes"):
        await duo.verify_passcode(session, good, BROWSER)
    refused = await audit_rows(duo_gateway, "duo_passcode", "alice")
    assert [row.outcome for row in refused] == ["refused"] * 5 + ["locked"]  # unseen by Duo
    clock = duo_gateway.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(minutes=15))
    completion = await duo.verify_passcode(session, good, BROWSER)
    assert completion.session.level is Level.SIGNED_IN


async def configure_duo(gateway: Gateway, user_id: int) -> None:
    """Alice has set up Duo Push (as an approved first push would have recorded)."""
    async with gateway.db.begin() as db:
        (await DuoEnrolments(db).get_or_create(user_id)).configured_at = gateway.clock.now()


async def test_failmode_secure_refuses_when_duo_cannot_be_asked(
    failing: FailingGateway,
) -> None:
    failing_gateway = await failing("secure", "503")
    await add_user(failing_gateway, "alice", twofa=True)
    session = await password_session(failing_gateway, "alice")
    duo = duo_of(failing_gateway)
    with pytest.raises(DuoDown, match="failmode: secure"):
        await duo.send_push(session, BROWSER)
    with pytest.raises(DuoDown):
        await duo.setup(session, BROWSER)
    rows = await audit_rows(failing_gateway, "failmode", "alice")
    assert [row.outcome for row in rows] == ["secure", "secure"]
    assert rows[0].detail["error"].startswith("DuoServerError")
    assert rows[0].client_ip == BROWSER.ip
    assert await audit_rows(failing_gateway, "duo_push") == []  # no challenge was stored


FailingGateway = Callable[[str, str], Awaitable[Gateway]]


@pytest.fixture
async def failing(database_url: str, simulator: RunningSimulator) -> AsyncIterator[FailingGateway]:
    """Starts a gateway in failmode `failmode` whose Duo cannot be asked (`cause` "503"), or
    refuses its keys ("bad_skey": a wrong secret, 401), or answers ("none")."""
    started: list[Gateway] = []

    async def start(failmode: str, cause: str) -> Gateway:
        skey = "wrong-secret-key-wrong-secret-key-00000000" if cause == "bad_skey" else None
        if cause == "503":
            simulator.control.post("/_sim/faults", json={"status": 503}).raise_for_status()
        simulator.add_user("alice")
        settings = duo_settings(database_url, simulator, failmode=FailMode(failmode), skey=skey)
        started.append(await start_duo_gateway(settings))
        return started[-1]

    yield start
    for gateway in started:
        await gateway.close()


async def test_failmode_safe_fails_open_for_a_duo_user_and_audits_it(
    failing: FailingGateway,
) -> None:
    failing_gateway = await failing("safe", "503")
    await configure_duo(failing_gateway, await add_user(failing_gateway, "alice", twofa=True))
    session = await password_session(failing_gateway, "alice")
    duo = duo_of(failing_gateway)
    with pytest.raises(FailOpen) as caught:
        await duo.send_push(session, BROWSER)
    assert not isinstance(caught.value, DuoDown)
    assert [row.outcome for row in await audit_rows(failing_gateway, "failmode")] == ["safe"]
    completion = await duo.bypass(session, BROWSER, Bypass.FAILMODE_SAFE)
    assert completion.session.level is Level.SIGNED_IN
    assert not completion.passed_second_factor  # never fresh, never a remembered device
    assert await failing_gateway.devices.remember(completion, BROWSER) is None
    bypassed = await audit_rows(failing_gateway, "second_factor", "alice")
    assert [(row.outcome, row.detail["reason"]) for row in bypassed] == [
        ("bypassed", "failmode safe")
    ]


async def test_failmode_safe_does_not_let_in_a_user_without_duo(
    failing: FailingGateway,
) -> None:
    failing_gateway = await failing("safe", "503")
    await add_user(failing_gateway, "alice", twofa=True)
    session = await password_session(failing_gateway, "alice")
    with pytest.raises(SecondFactorError, match="cannot sign in without it"):
        await duo_of(failing_gateway).bypass(session, BROWSER, Bypass.FAILMODE_SAFE)
    refused = await audit_rows(failing_gateway, "second_factor", "alice")
    assert [(row.outcome, row.detail["cause"]) for row in refused] == [
        ("bypass_refused", "failmode safe")
    ]


@pytest.mark.parametrize("failmode", ["secure", "safe"])
async def test_a_wrong_secret_key_fails_closed_in_either_failmode(
    failing: FailingGateway, failmode: str
) -> None:
    failing_gateway = await failing(failmode, "bad_skey")
    await configure_duo(failing_gateway, await add_user(failing_gateway, "alice", twofa=True))
    session = await password_session(failing_gateway, "alice")
    with pytest.raises(DuoRefused, match="refused its keys") as caught:
        await duo_of(failing_gateway).send_push(session, BROWSER)
    assert not isinstance(caught.value, FailOpen | DuoDown)
    assert await audit_rows(failing_gateway, "failmode") == []
    [error] = await audit_rows(failing_gateway, "duo_error", "alice")
    assert error.detail["error"].startswith("Duo answered 401")


async def test_duo_rate_limiting_fails_closed_even_in_failmode_safe(
    failing: FailingGateway,
) -> None:
    """A 429 outlasting Duo's back-off schedule: Duo answered, so no fail-open."""
    safe = await failing("safe", "none")
    user_id = await add_user(safe, "alice", twofa=True)
    await configure_duo(safe, user_id)
    async with safe.db.begin() as db:
        user = await Users(db).by_id(user_id)
    assert user is not None

    async def rate_limited() -> None:
        raise DuoRateLimited(http_status=429, code=42901, message="Too Many Requests", detail=None)

    with pytest.raises(DuoRefused, match="too many"):
        await duo_of(safe).ask_duo(rate_limited(), user, BROWSER)
    assert await audit_rows(safe, "failmode") == []
    assert [row.outcome for row in await audit_rows(safe, "duo_error")] == ["42901"]


async def test_failmode_applies_while_polling(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(session, BROWSER)
    simulator.control.post(
        "/_sim/faults", json={"status": 502, "endpoints": ["auth_status"], "count": 1}
    ).raise_for_status()
    with pytest.raises(DuoDown):
        await duo.poll(session, challenge, BROWSER)
    [txid] = [str(t["txid"]) for t in simulator.pending("alice")]
    simulator.settle(txid, "approve").raise_for_status()
    assert (await duo.poll(session, challenge, BROWSER)).state is PushState.ALLOW


async def test_duo_refusal_is_not_failmode(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    with pytest.raises(SecondFactorError, match="Duo refused") as caught:
        await duo_of(duo_gateway).send_push(session, BROWSER, device="DPNOSUCHDEVICE000000")
    assert not isinstance(caught.value, DuoDown | FailOpen)
    assert await audit_rows(duo_gateway, "failmode") == []
    assert [row.outcome for row in await audit_rows(duo_gateway, "duo_error")] == ["40002"]


async def test_push_round_trip_on_postgresql(simulator: RunningSimulator, tmp_path: Path) -> None:
    simulator.add_user("alice")
    async with postgres_database() as url:
        gateway = await start_duo_gateway(duo_settings(url, simulator))
        try:
            await add_user(gateway, "alice", twofa=True)
            login = await sign_in(gateway, "alice")
            assert login.result is LoginResult.SECOND_FACTOR
            assert login.session is not None
            duo = duo_of(gateway)
            challenge = await duo.send_push(login.session, BROWSER)
            [txid] = [str(t["txid"]) for t in simulator.pending("alice")]
            simulator.settle(txid, "approve").raise_for_status()
            result = await duo.poll(login.session, challenge, BROWSER)
            assert result.state is PushState.ALLOW
            assert result.completion is not None
            assert result.completion.session.level is Level.SIGNED_IN
            assert await gateway.sessions.load(login.token) is None
            with pytest.raises(SecondFactorError):
                await duo.poll(login.session, challenge, BROWSER)
            assert (await gateway.accounts.user("alice")).duo_configured
        finally:
            await gateway.close()

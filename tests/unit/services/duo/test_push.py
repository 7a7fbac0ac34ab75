"""The Duo Push use cases against the real simulator over HTTP: set-up and activation, sending a
push, following it to an answer, and the challenge rules (one session, at most once)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.conftest import RunningSimulator
from tests.unit.services.conftest import (
    BROWSER,
    add_user,
    audit_rows,
    duo_of,
    password_session,
    sign_in,
)
from twofa.clock import FrozenClock
from twofa.duo.models import EnrollmentStatus
from twofa.services.duo.rules import PollResult, PushState, SetupKind
from twofa.services.runtime import Gateway
from twofa.services.second_factor.outcomes import DuoDown, SecondFactorError
from twofa.services.state.sessions import Level, SessionView


async def pushed_txid(simulator: RunningSimulator, username: str) -> str:
    pending = simulator.pending(username)
    assert len(pending) == 1, pending
    return str(pending[0]["txid"])


async def test_setup_for_a_user_unknown_to_duo_starts_activation(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    view = await duo_of(duo_gateway).setup(session, BROWSER)
    assert view.kind is SetupKind.ACTIVATE
    assert view.activation_code is not None
    assert view.activation_code.startswith("duo://")
    assert view.expires_at is not None
    assert view.expires_at > duo_gateway.clock.now()
    again = await duo_of(duo_gateway).setup(session, BROWSER)
    assert again.kind is SetupKind.ACTIVATE
    assert again.activation_code == view.activation_code
    enrolments = simulator.control.get("/_sim/enrollments", params={"username": "alice"}).json()
    assert [e["activation_code"] for e in enrolments] == [view.activation_code]
    assert len(await audit_rows(duo_gateway, "duo_enrol", "alice")) == 1


async def test_activation_status_follows_the_phone(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    assert await duo.activation_status(session, BROWSER) is EnrollmentStatus.INVALID
    view = await duo.setup(session, BROWSER)
    assert await duo.activation_status(session, BROWSER) is EnrollmentStatus.WAITING
    answer = simulator.control.post(
        "/_sim/activate", json={"activation_code": view.activation_code}
    )
    answer.raise_for_status()
    assert await duo.activation_status(session, BROWSER) is EnrollmentStatus.SUCCESS
    ready = await duo.setup(session, BROWSER)
    assert ready.kind is SetupKind.READY
    assert len(ready.devices) == 1


async def test_setup_for_a_user_with_a_device_is_ready(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    created = simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    view = await duo_of(duo_gateway).setup(await password_session(duo_gateway, "alice"), BROWSER)
    assert view.kind is SetupKind.READY
    devices = created["devices"]
    assert isinstance(devices, list)
    assert [d.device_id for d in view.devices] == [devices[0]["device"]]
    assert view.devices[0].name == "iPhone"
    assert view.preferred_device is None


@pytest.mark.parametrize(("override", "kind"), [("allow", "bypass"), ("deny", "denied")])
async def test_preauth_overrides_bypass_or_deny(
    duo_gateway: Gateway, simulator: RunningSimulator, override: str, kind: str
) -> None:
    simulator.add_user("alice", preauth=override)
    await add_user(duo_gateway, "alice", twofa=True)
    view = await duo_of(duo_gateway).setup(await password_session(duo_gateway, "alice"), BROWSER)
    assert view.kind is SetupKind(kind)
    assert view.activation_code is None
    rows = await audit_rows(duo_gateway, "duo_preauth", "alice")
    assert [row.outcome for row in rows] == [kind]


async def test_push_reaches_the_phone_with_its_context(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    await duo_of(duo_gateway).send_push(await password_session(duo_gateway, "alice"), BROWSER)
    [push] = simulator.pending("alice")
    assert push["status"] == "pushed"
    assert push["display_username"] == "Alice"
    assert push["type"] == "Login request"
    assert push["pushinfo"] == {"Application": "twofa", "IP address": BROWSER.ip}
    assert push["ipaddr"] == BROWSER.ip
    sent = await audit_rows(duo_gateway, "duo_push", "alice")
    assert [(row.outcome, row.detail["purpose"]) for row in sent] == [("sent", "enrol")]


async def test_approved_push_signs_in_and_retires_the_pending_session(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    user_id = await add_user(duo_gateway, "alice", twofa=True)
    login = await sign_in(duo_gateway, "alice")
    assert login.session is not None
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(login.session, BROWSER)
    waiting = await duo.poll(login.session, challenge, BROWSER)
    assert waiting.state is PushState.PENDING
    assert waiting.completion is None
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    result = await duo.poll(login.session, challenge, BROWSER)
    assert result.state is PushState.ALLOW
    assert result.completion is not None
    assert result.completion.session.level is Level.SIGNED_IN
    assert result.completion.session.user_id == user_id
    assert await duo_gateway.sessions.load(login.token) is None
    assert await duo_gateway.sessions.load(result.completion.token) == result.completion.session
    assert [r.outcome for r in await audit_rows(duo_gateway, "duo_push")] == ["sent", "allow"]
    with pytest.raises(SecondFactorError):
        await duo.poll(login.session, challenge, BROWSER)


async def test_challenge_polled_from_another_session_is_refused(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    first = await password_session(duo_gateway, "alice")
    second = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(first, BROWSER)
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    with pytest.raises(SecondFactorError):
        await duo.poll(second, challenge, BROWSER)
    with pytest.raises(SecondFactorError):
        await duo.poll(first, "no-such-challenge", BROWSER)
    assert (await duo.poll(first, challenge, BROWSER)).state is PushState.ALLOW


async def test_an_anonymous_session_cannot_push(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice")
    _, anonymous = await duo_gateway.sessions.open(BROWSER)
    with pytest.raises(SecondFactorError, match="sign in again"):
        await duo_of(duo_gateway).send_push(anonymous, BROWSER)
    assert simulator.pending("alice") == []


async def test_a_signed_in_session_may_push_to_confirm_a_change(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    """Step-up: a signed-in user confirms a sensitive change with a push."""
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice")
    signed_in = (await sign_in(duo_gateway, "alice")).session
    assert isinstance(signed_in, SessionView)
    await duo_of(duo_gateway).send_push(signed_in, BROWSER)
    assert len(simulator.pending("alice")) == 1


@pytest.mark.parametrize(
    ("action", "state"),
    [("deny", PushState.DENY), ("fraud", PushState.FRAUD), ("timeout", PushState.TIMEOUT)],
)
async def test_unapproved_push_does_not_sign_in_or_resend(
    duo_gateway: Gateway, simulator: RunningSimulator, action: str, state: PushState
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    login = await sign_in(duo_gateway, "alice")
    assert login.session is not None
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(login.session, BROWSER)
    simulator.settle(await pushed_txid(simulator, "alice"), action).raise_for_status()
    for _ in range(2):  # the answer is kept: asking again gives the same, and no new push
        result = await duo.poll(login.session, challenge, BROWSER)
        assert result.state is state
        assert result.completion is None
    assert await duo_gateway.sessions.load(login.token) == login.session
    listed = simulator.control.get("/_sim/transactions", params={"username": "alice"}).json()
    assert len(listed) == 1
    outcomes = [row.outcome for row in await audit_rows(duo_gateway, "duo_push", "alice")]
    assert outcomes == ["sent", state.value]


async def test_enrolment_is_configured_after_the_first_approved_push(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    view = await duo.setup(session, BROWSER)
    simulator.control.post(
        "/_sim/activate", json={"activation_code": view.activation_code}
    ).raise_for_status()
    assert not (await duo_gateway.accounts.user("alice")).duo_configured
    challenge = await duo.send_push(session, BROWSER)
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    device = (await duo.setup(session, BROWSER)).devices[0].device_id
    result = await duo.poll(session, challenge, BROWSER, device=device)
    assert result.completion is not None
    assert result.completion.enrolled_now  # where the backup-method step will hook in
    assert (await duo_gateway.accounts.user("alice")).duo_configured
    rows = await audit_rows(duo_gateway, "duo_push", "alice")
    assert [(row.outcome, row.detail["purpose"]) for row in rows] == [
        ("sent", "enrol"),
        ("allow", "enrol"),
    ]
    next_login = await password_session(duo_gateway, "alice")
    later = await duo.validation(next_login, BROWSER)  # set-up is closed to a password alone
    assert later.kind is SetupKind.READY
    assert later.preferred_device == device
    second = await duo.send_push(next_login, BROWSER, device=device)
    rows = await audit_rows(duo_gateway, "duo_push", "alice")
    assert (rows[-1].outcome, rows[-1].detail["purpose"]) == ("sent", "validate")
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    again = await duo.poll(next_login, second, BROWSER, device=device)
    assert again.completion is not None
    assert not again.completion.enrolled_now


async def test_concurrent_polls_of_an_approved_push_complete_once(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(session, BROWSER)
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    results = await asyncio.gather(
        *(duo.poll(session, challenge, BROWSER) for _ in range(3)), return_exceptions=True
    )
    completed = [r for r in results if isinstance(r, PollResult) and r.completion is not None]
    refused = [r for r in results if isinstance(r, SecondFactorError)]
    assert (len(completed), len(refused)) == (1, 2), results
    allows = [r for r in await audit_rows(duo_gateway, "duo_push") if r.outcome == "allow"]
    assert len(allows) == 1


async def test_push_answered_after_the_challenge_expired_does_not_sign_in(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    login = await sign_in(duo_gateway, "alice")
    assert login.session is not None
    duo = duo_of(duo_gateway)
    challenge = await duo.send_push(login.session, BROWSER)
    simulator.settle(await pushed_txid(simulator, "alice"), "approve").raise_for_status()
    clock = duo_gateway.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=76))
    result = await duo.poll(login.session, challenge, BROWSER)
    assert result.state is PushState.TIMEOUT
    assert result.completion is None
    assert not (await duo_gateway.accounts.user("alice")).duo_configured


async def test_expired_activation_of_a_user_duo_knows_asks_for_the_administrator(
    duo_gateway: Gateway,
) -> None:
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    duo = duo_of(duo_gateway)
    await duo.setup(session, BROWSER)
    clock = duo_gateway.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(SecondFactorError, match="already exists in Duo") as caught:
        await duo.setup(session, BROWSER)
    assert not isinstance(caught.value, DuoDown)
    assert [r.outcome for r in await audit_rows(duo_gateway, "duo_error", "alice")] == ["40002"]

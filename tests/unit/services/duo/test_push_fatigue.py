"""The push fatigue guard against the real simulator, with a frozen clock: the daily cap on
pushes, calls and texts (counted before Duo is asked, also under concurrency), the pause after a
"This wasn't me" answer (seen by every gateway process, lifted by time or the admin's Unlock),
what the Overview shows, and the doctor's "Duo alerts" line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import RunningSimulator
from tests.unit.services.conftest import (
    BROWSER,
    add_user,
    audit_rows,
    duo_of,
    duo_settings,
    password_session,
    start_duo_gateway,
)
from twofa.clock import FrozenClock
from twofa.config import DuoFactor, Settings
from twofa.domain.client import NO_CLIENT
from twofa.duo.models import Capability, Device, DeviceType
from twofa.services.admin.overview import OverviewService
from twofa.services.doctor import State, duo_refusal_status, examine
from twofa.services.duo.factors import DuoFactorService
from twofa.services.duo.push import DuoPushService
from twofa.services.duo.push_fatigue import (
    DailyCapReached,
    PushesPaused,
    utc_time,
    without_phone_requests,
)
from twofa.services.duo.rules import FactorOffer, PollResult, PushState
from twofa.services.runtime import Gateway
from twofa.services.state import audit
from twofa.services.state.sessions import SessionView


def fatigue_settings(database_url: str, simulator: RunningSimulator, **duo: Any) -> Settings:
    """Duo with every factor allowed and a per-minute limit out of the way."""
    settings = duo_settings(database_url, simulator)
    changes = {"allowed_factors": tuple(DuoFactor), "pushes_per_minute": 60, **duo}
    return settings.model_copy(update={"duo": settings.duo.model_copy(update=changes)})


@pytest.fixture
async def gateway(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Gateway]:
    settings = fatigue_settings(database_url, simulator, pushes_per_day=3, fraud_pause_minutes=30)
    running = await start_duo_gateway(settings)
    try:
        yield running
    finally:
        await running.close()


def clock_of(gateway: Gateway) -> FrozenClock:
    assert isinstance(gateway.clock, FrozenClock)
    return gateway.clock


def transactions(simulator: RunningSimulator, username: str = "alice") -> int:
    """Everything that reached Duo for the user: pushes, calls and texts, answered or not."""
    answer = simulator.control.get("/_sim/transactions", params={"username": username})
    return len(answer.json())


def texts(simulator: RunningSimulator, username: str = "alice") -> int:
    return len(simulator.control.get(f"/_sim/users/{username}/sms").json()["messages"])


async def alice(gateway: Gateway, simulator: RunningSimulator) -> SessionView:
    simulator.add_user("alice")
    await add_user(gateway, "alice", twofa=True)
    return await password_session(gateway, "alice")


async def answer(
    duo: DuoPushService, simulator: RunningSimulator, session: SessionView, action: str
) -> PollResult:
    """Sends a push, answers it on the phone with `action`, polls until twofa sees it."""
    challenge = await duo.send_push(session, BROWSER)
    [pushed] = simulator.pending("alice")
    simulator.settle(str(pushed["txid"]), action).raise_for_status()
    for _ in range(5):  # a poll may still report the waiting it had not reported yet
        result = await duo.poll(session, challenge, BROWSER)
        if result.state is not PushState.PENDING:
            return result
    raise AssertionError("the answer never reached twofa")


# ---- the daily cap ------------------------------------------------------------------------


async def test_a_push_past_the_daily_cap_is_refused_before_it_reaches_duo(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    for _ in range(3):
        await duo.send_push(session, BROWSER)

    with pytest.raises(DailyCapReached) as refused:
        await duo.send_push(session, BROWSER)

    assert transactions(simulator) == 3  # the fourth never reached Duo
    assert "3 pushes, calls and texts in the last day" in refused.value.message
    assert "another method" in refused.value.message
    assert refused.value.until == clock_of(gateway).now() + timedelta(days=1)
    [limited] = [r for r in await audit_rows(gateway, "duo_push") if r.outcome == "rate_limited"]
    assert limited.detail["limit"] == "daily"
    assert limited.detail["per_day"] == 3


async def test_calls_and_texts_share_the_daily_cap_with_pushes(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    factors = DuoFactorService(duo_of(gateway))
    await factors.send_push(session, BROWSER, "auto")
    await factors.call(session, BROWSER, "auto")
    await factors.text_passcodes(session, BROWSER, "auto")

    with pytest.raises(DailyCapReached):
        await factors.text_passcodes(session, BROWSER, "auto")
    with pytest.raises(DailyCapReached):
        await factors.call(session, BROWSER, "auto")

    assert (transactions(simulator), texts(simulator)) == (3, 1)
    limited = [
        (row.kind, row.detail.get("limit"))
        for row in await audit_rows(gateway)
        if row.outcome == "rate_limited"
    ]
    assert limited == [("duo_sms", "daily"), ("duo_phone", "daily")]


async def test_the_daily_cap_lifts_a_day_after_the_request_that_reached_it(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo, clock = duo_of(gateway), clock_of(gateway)
    for _ in range(3):
        await duo.send_push(session, BROWSER)
    clock.advance(timedelta(hours=23, minutes=59))
    with pytest.raises(DailyCapReached):
        await duo.send_push(session, BROWSER)

    clock.advance(timedelta(minutes=1, seconds=1))
    await duo.send_push(session, BROWSER)

    assert transactions(simulator) == 4


async def test_requests_refused_by_the_minute_limit_do_not_use_up_the_day(
    database_url: str, simulator: RunningSimulator
) -> None:
    settings = fatigue_settings(database_url, simulator, pushes_per_day=3, pushes_per_minute=1)
    gateway = await start_duo_gateway(settings)
    try:
        session = await alice(gateway, simulator)
        duo = duo_of(gateway)
        await duo.send_push(session, BROWSER)
        for _ in range(5):
            with pytest.raises(Exception, match="Too many push requests"):
                await duo.send_push(session, BROWSER)
        for _ in range(2):
            clock_of(gateway).advance(timedelta(seconds=61))
            await duo.send_push(session, BROWSER)
    finally:
        await gateway.close()
    assert transactions(simulator) == 3


async def test_concurrent_pushes_never_send_more_than_the_daily_cap(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)

    outcomes = await asyncio.gather(
        *(duo.send_push(session, BROWSER) for _ in range(10)), return_exceptions=True
    )

    sent = [outcome for outcome in outcomes if isinstance(outcome, str)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, DailyCapReached)]
    assert (len(sent), len(refused)) == (3, 7), outcomes
    assert transactions(simulator) == 3


async def test_concurrent_pushes_never_send_more_than_the_minute_allows(
    database_url: str, simulator: RunningSimulator
) -> None:
    """The per-minute limit is counted before Duo is asked too: it used to count the
    challenge rows already written, so requests racing each other all saw room."""
    settings = fatigue_settings(database_url, simulator, pushes_per_day=20, pushes_per_minute=3)
    gateway = await start_duo_gateway(settings)
    try:
        session = await alice(gateway, simulator)
        outcomes = await asyncio.gather(
            *(duo_of(gateway).send_push(session, BROWSER) for _ in range(10)),
            return_exceptions=True,
        )
    finally:
        await gateway.close()
    sent = [outcome for outcome in outcomes if isinstance(outcome, str)]
    too_fast = [o for o in outcomes if "Too many push requests" in str(o)]
    assert (len(sent), len(too_fast)) == (3, 7), outcomes
    assert transactions(simulator) == 3


# ---- the pause after a fraud report --------------------------------------------------------


async def test_a_fraud_answer_pauses_pushes_calls_and_texts(
    gateway: Gateway, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    session = await alice(gateway, simulator)
    duo, now = duo_of(gateway), clock_of(gateway).now()
    factors = DuoFactorService(duo)

    with caplog.at_level(logging.WARNING, logger="twofa.push_fatigue"):
        reported = await answer(duo, simulator, session, "fraud")

    until = now + timedelta(minutes=30)
    assert reported.state is PushState.FRAUD
    assert f"paused until {utc_time(until, now)}" in reported.message
    assert any("reported a Duo push as fraud" in r.getMessage() for r in caplog.records)
    [paused] = await audit_rows(gateway, "push_fatigue")
    assert (paused.outcome, paused.username) == ("paused", "alice")
    assert paused.detail["until"] == until.isoformat()
    assert paused.detail["minutes"] == 30

    for request in (duo.send_push(session, BROWSER), factors.call(session, BROWSER, "auto")):
        with pytest.raises(PushesPaused) as refused:
            await request
        assert refused.value.until == until
        assert "You reported a Duo Push you did not make" in refused.value.message
    with pytest.raises(PushesPaused):
        await factors.text_passcodes(session, BROWSER, "auto")

    assert (transactions(simulator), texts(simulator)) == (1, 0)  # only the reported push
    refusals = [(r.kind, r.outcome) for r in await audit_rows(gateway) if r.outcome == "paused"]
    assert refusals == [
        ("push_fatigue", "paused"),
        ("duo_push", "paused"),
        ("duo_phone", "paused"),
        ("duo_sms", "paused"),
    ]
    assert await duo.pause_notice(session) == refused.value.message


async def test_a_deny_does_not_pause(gateway: Gateway, simulator: RunningSimulator) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    denied = await answer(duo, simulator, session, "deny")
    assert denied.state is PushState.DENY
    await duo.send_push(session, BROWSER)
    assert await duo.pause_notice(session) is None
    assert await audit_rows(gateway, "push_fatigue") == []


async def test_the_pause_lifts_after_fraud_pause_minutes(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo, clock = duo_of(gateway), clock_of(gateway)
    await answer(duo, simulator, session, "fraud")

    clock.advance(timedelta(minutes=29, seconds=59))
    with pytest.raises(PushesPaused):
        await duo.send_push(session, BROWSER)
    clock.advance(timedelta(seconds=1))
    await duo.send_push(session, BROWSER)

    assert await duo.pause_notice(session) is None
    assert transactions(simulator) == 2


async def test_the_pause_is_seen_by_every_gateway_process(
    gateway: Gateway, database_url: str, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    await answer(duo_of(gateway), simulator, session, "fraud")
    settings = fatigue_settings(database_url, simulator, pushes_per_day=3, fraud_pause_minutes=30)
    other = await start_duo_gateway(settings)  # another process on the same database
    try:
        with pytest.raises(PushesPaused):
            await duo_of(other).send_push(await password_session(other, "alice"), BROWSER)
    finally:
        await other.close()
    assert transactions(simulator) == 1


async def test_the_admins_unlock_lifts_the_pause(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    await answer(duo, simulator, session, "fraud")
    assert await gateway.accounts.locked_until("alice") is not None  # User Management shows it

    assert await gateway.accounts.unlock_user("alice", NO_CLIENT) is True

    await duo.send_push(session, BROWSER)
    assert transactions(simulator) == 2
    [unlocked] = await audit_rows(gateway, "user_unlock")
    assert unlocked.detail["was_locked"] is True


async def test_the_admins_unlock_also_lifts_the_daily_cap(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    for _ in range(3):
        await duo.send_push(session, BROWSER)
    await gateway.accounts.unlock_user("alice", NO_CLIENT)
    await duo.send_push(session, BROWSER)
    assert transactions(simulator) == 4


async def test_duo_mobile_passcodes_still_sign_in_during_a_pause(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    await answer(duo, simulator, session, "fraud")
    passcode = simulator.control.post("/_sim/passcodes", json={"username": "alice"}).json()

    completion = await duo.verify_passcode(session, str(passcode["passcode"]), BROWSER)

    assert completion.session.user_id is not None


async def test_polls_racing_on_one_fraud_answer_pause_and_audit_once(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    session = await alice(gateway, simulator)
    duo = duo_of(gateway)
    challenge = await duo.send_push(session, BROWSER)
    [pushed] = simulator.pending("alice")
    simulator.settle(str(pushed["txid"]), "fraud").raise_for_status()

    for _ in range(5):
        results = await asyncio.gather(*(duo.poll(session, challenge, BROWSER) for _ in range(3)))
        if all(result.state is PushState.FRAUD for result in results):
            break

    assert len(await audit_rows(gateway, "push_fatigue")) == 1
    assert [r.outcome for r in await audit_rows(gateway, "duo_push")] == ["sent", "fraud"]


def test_a_paused_user_is_offered_only_passcodes() -> None:
    phone = Device("DP1", DeviceType.PHONE, "iPhone", "iPhone", "+1555", frozenset(Capability))
    offer = FactorOffer(push=True, phone=(phone,), sms=(phone,), passcode=True)
    assert without_phone_requests(offer) == FactorOffer(passcode=True)


# ---- telling the admin --------------------------------------------------------------------


async def test_the_overview_counts_fraud_reports_and_lists_who_is_paused(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    overview = OverviewService(gateway.db, gateway.clock, gateway.console)
    session = await alice(gateway, simulator)
    now = clock_of(gateway).now()
    await answer(duo_of(gateway), simulator, session, "fraud")

    figures = await overview.overview()

    assert figures.activity.fraud_reports == 1
    assert [(user.username, user.until) for user in figures.paused] == [
        ("alice", now + timedelta(minutes=30))
    ]
    await gateway.accounts.unlock_user("alice", NO_CLIENT)
    assert await overview.paused() == ()
    assert (await overview.activity()).fraud_reports == 1  # the report itself stays counted


@pytest.mark.parametrize(
    ("outcome", "error", "status"),
    [
        ("40103", "Duo answered 401 code 40103: Invalid signature", 401),
        ("42901", "Duo answered 429 code 42901: Too many requests", 429),
        ("None", "Duo answered 429 code None: Too many requests", 429),
        ("40301", None, 403),
        ("40002", "Duo answered 400 code 40002: Invalid request parameters", None),
        ("50001", "Duo answered 500 code 50001: oops", None),
    ],
)
def test_duo_refusals_are_read_from_the_error_text_first(
    outcome: str, error: str | None, status: int | None
) -> None:
    assert duo_refusal_status(outcome, error) == status


async def test_duo_alerts_fail_for_an_hour_after_a_fraud_report_or_a_refusal(
    gateway: Gateway, simulator: RunningSimulator
) -> None:
    def alerts() -> Any:
        return next(f for f in findings if f.part == "Duo alerts")

    findings = await examine(gateway)
    assert alerts().state is State.OK
    session = await alice(gateway, simulator)
    await answer(duo_of(gateway), simulator, session, "fraud")
    async with gateway.db.begin() as db:
        error = "Duo answered 429 code 42901: Too many requests"
        audit.record(db, gateway.clock, "duo_error", "42901", username="bob", error=error)

    findings = await examine(gateway)
    assert alerts().state is State.FAILED
    assert "1 fraud report (alice)" in alerts().detail
    assert "rate-limited twofa 1 time (HTTP 429)" in alerts().detail

    clock_of(gateway).advance(timedelta(hours=1, seconds=1))
    findings = await examine(gateway)
    assert alerts().state is State.OK

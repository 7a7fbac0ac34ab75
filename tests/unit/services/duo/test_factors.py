"""DuoFactorService against the simulator over HTTP: the admin's gate runs before Duo is asked,
a text Duo did not send is reported, and a call completes through the push service's poll."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
from twofa.config import DuoFactor
from twofa.services.duo.factors import DuoFactorService, FactorNotAllowed
from twofa.services.duo.rules import PushState
from twofa.services.runtime import Gateway
from twofa.services.second_factor.outcomes import SecondFactorError


@pytest.fixture
async def every_factor(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Gateway]:
    settings = duo_settings(database_url, simulator)
    duo = settings.duo.model_copy(update={"allowed_factors": tuple(DuoFactor)})
    running = await start_duo_gateway(settings.model_copy(update={"duo": duo}))
    try:
        yield running
    finally:
        await running.close()


async def test_a_refused_factor_is_audited_and_never_reaches_duo(
    duo_gateway: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(duo_gateway, "alice", twofa=True)
    session = await password_session(duo_gateway, "alice")
    factors = DuoFactorService(duo_of(duo_gateway))

    with pytest.raises(FactorNotAllowed):
        await factors.call(session, BROWSER, "auto")
    with pytest.raises(FactorNotAllowed):
        await factors.text_passcodes(session, BROWSER, "auto")

    assert simulator.control.get("/_sim/transactions").json() == []
    assert simulator.control.get("/_sim/users/alice/sms").json()["messages"] == []
    rows = await audit_rows(duo_gateway)
    refused = [(row.kind, row.outcome) for row in rows if row.kind.startswith("duo_")]
    assert refused == [("duo_phone", "not_allowed"), ("duo_sms", "not_allowed")]


async def test_a_text_duo_did_not_send_is_reported_and_audited(
    every_factor: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice", preauth="deny")  # Duo's policy refuses every factor
    await add_user(every_factor, "alice", twofa=True)
    session = await password_session(every_factor, "alice")

    with pytest.raises(SecondFactorError) as refused:
        await DuoFactorService(duo_of(every_factor)).text_passcodes(session, BROWSER, "auto")

    assert "Duo did not send the text" in refused.value.message
    [event] = await audit_rows(every_factor, "duo_sms")
    assert event.outcome == "deny"


async def test_an_approved_call_signs_in_through_the_push_poll(
    every_factor: Gateway, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    await add_user(every_factor, "alice", twofa=True)
    session = await password_session(every_factor, "alice")
    duo = duo_of(every_factor)

    challenge = await DuoFactorService(duo).call(session, BROWSER, "auto")
    [ringing] = simulator.pending("alice")
    ringing_poll = await duo.poll(session, challenge, BROWSER)
    simulator.settle(str(ringing["txid"]), "approve").raise_for_status()
    result = await duo.poll(session, challenge, BROWSER)
    for _ in range(3):  # a poll may still report the ringing it had not yet reported
        if result.state is not PushState.PENDING:
            break
        result = await duo.poll(session, challenge, BROWSER)

    assert ringing_poll.state is PushState.PENDING
    assert ringing_poll.message.startswith("Calling your phone")
    assert result.state is PushState.ALLOW
    assert result.completion is not None
    assert result.completion.enrolled_now  # a call finishes Duo set-up like a push does

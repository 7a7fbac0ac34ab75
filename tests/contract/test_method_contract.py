"""The contract every second-factor method keeps, run over every registered method through
the real SecondFactorService on SQLite and PostgreSQL: enrolment round-trips; a valid response
succeeds exactly once; a wrong one fails with the method's one failure message; an expired
challenge fails; failures up to the method's limit lock it; every outcome is audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.contract.authenticators import AUTHENTICATORS
from tests.contract.harness import USERNAME, Authenticator, Harness, harness_on
from tests.support.databases import postgres_database, sqlite_database
from twofa.config import load_settings
from twofa.domain.client import NO_CLIENT
from twofa.methods.registry import LOCAL_METHOD_CODES
from twofa.security.hashing_pool import HashingPool
from twofa.security.passwords import PasswordHashing
from twofa.services.runtime import build_registry
from twofa.services.second_factor.challenges import EXPIRED_MESSAGE
from twofa.services.second_factor.failures import FAILURE_MESSAGES, failure_rule, locked_message
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state.sessions import Level
from twofa.storage.audit_log import AuditLog

REGISTERED = build_registry(
    load_settings(environ={}, mode="dev"), hashing=HashingPool(PasswordHashing())
).local_codes
CODES = sorted(code for code in REGISTERED if code in AUTHENTICATORS)


@pytest.fixture(params=["sqlite", "postgresql"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, harness_on(url) as harness:
        yield harness


async def enrol(harness: Harness, code: str) -> Authenticator:
    """Carol's first sign-in: she sets the method up, which also signs her in."""
    authenticator = AUTHENTICATORS[code]()
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, code, NO_CLIENT)
    response = authenticator.enrolment_response(started.show, harness)
    enrolled = await harness.second_factor.finish_enrolment(
        session, code, started.challenge_id, response, NO_CLIENT
    )
    assert enrolled.completion is not None
    assert enrolled.completion.session.level is Level.SIGNED_IN
    assert enrolled.completion.enrolled_now
    return authenticator


async def audit_outcomes(harness: Harness, kind: str) -> list[str]:
    async with harness.gateway.db.begin() as db:
        rows = await AuditLog(db).recent(200, username=USERNAME)
    return [row.outcome for row in rows if row.kind == kind]


def test_every_registered_method_is_covered() -> None:
    assert set(REGISTERED) <= set(LOCAL_METHOD_CODES)
    missing = set(REGISTERED) - set(AUTHENTICATORS)
    assert not missing, f"registered without a contract authenticator: {sorted(missing)}"


@pytest.mark.parametrize("code", CODES)
async def test_enrolment_round_trips_and_is_audited(harness: Harness, code: str) -> None:
    await enrol(harness, code)

    assert "added" in await audit_outcomes(harness, "enrolment")
    assert "allow" in await audit_outcomes(harness, "second_factor")
    mine = await harness.gateway.my_methods.overview(
        (await harness.password_session()).user_id or 0
    )
    assert [c.method for c in mine.credentials] == [code]


@pytest.mark.parametrize("code", CODES)
async def test_a_valid_response_succeeds_exactly_once(harness: Harness, code: str) -> None:
    authenticator = await enrol(harness, code)
    session = await harness.password_session()
    started = await harness.second_factor.start(session, code, NO_CLIENT)
    response = authenticator.verification_response(started.show, harness)

    completion = await harness.second_factor.verify(
        session, code, started.challenge_id, response, NO_CLIENT
    )
    assert completion.session.level is Level.SIGNED_IN
    assert completion.session.second_factor_at == harness.clock.now()

    with pytest.raises(SecondFactorError, match="expired or was already used"):
        await harness.second_factor.verify(session, code, started.challenge_id, response, NO_CLIENT)


@pytest.mark.parametrize("code", CODES)
async def test_wrong_and_malformed_responses_fail_with_one_message(
    harness: Harness, code: str
) -> None:
    authenticator = await enrol(harness, code)
    message = FAILURE_MESSAGES[harness.second_factor.registry.get(code).kind]
    session = await harness.password_session()
    started = await harness.second_factor.start(session, code, NO_CLIENT)

    for response in (authenticator.wrong_response(started.show, harness), {}, {"x": "\x00"}):
        with pytest.raises(SecondFactorError) as caught:
            await harness.second_factor.verify(
                session, code, started.challenge_id, response, NO_CLIENT
            )
        assert caught.value.message == message
    assert (await audit_outcomes(harness, "second_factor")).count("refused") == 3


@pytest.mark.parametrize("code", CODES)
async def test_an_expired_challenge_fails(harness: Harness, code: str) -> None:
    authenticator = await enrol(harness, code)
    session = await harness.password_session()
    started = await harness.second_factor.start(session, code, NO_CLIENT)
    lifetime = harness.second_factor.registry.get(code).challenge_seconds
    harness.clock.advance(timedelta(seconds=lifetime + 1))
    response = authenticator.verification_response(started.show, harness)

    with pytest.raises(SecondFactorError) as caught:
        await harness.second_factor.verify(session, code, started.challenge_id, response, NO_CLIENT)
    assert caught.value.message == EXPIRED_MESSAGE
    assert "expired" in await audit_outcomes(harness, "second_factor")


@pytest.mark.parametrize("code", CODES)
async def test_failures_up_to_the_limit_lock_the_method_for_the_user(
    harness: Harness, code: str
) -> None:
    """Five per 15 minutes for most methods, three an hour for security questions."""
    rule = failure_rule(code)
    authenticator = await enrol(harness, code)
    session = await harness.password_session()
    started = await harness.second_factor.start(session, code, NO_CLIENT)
    wrong = authenticator.wrong_response(started.show, harness)
    for _ in range(rule.limit):
        with pytest.raises(SecondFactorError):
            await harness.second_factor.verify(
                session, code, started.challenge_id, wrong, NO_CLIENT
            )

    with pytest.raises(SecondFactorError) as caught:
        await harness.second_factor.start(session, code, NO_CLIENT)
    assert caught.value.message == locked_message(code)
    assert await audit_outcomes(harness, "lockout") == ["locked"]
    assert "locked" in await audit_outcomes(harness, "second_factor")

    harness.clock.advance(rule.lockout + timedelta(minutes=1))  # the lock-out ends
    again = await harness.second_factor.start(session, code, NO_CLIENT)
    response = authenticator.verification_response(again.show, harness)
    completion = await harness.second_factor.verify(
        session, code, again.challenge_id, response, NO_CLIENT
    )
    assert completion.session.level is Level.SIGNED_IN

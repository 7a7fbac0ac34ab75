"""Backup codes and security answers through the second-factor service, hashed in the
gateway's one hashing pool: never with a database connection held (so never inside an open
transaction), and when the pool is full, refused as busy before anything is checked, with the
attempt given back and nothing written, exactly as a password sign-in is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.contract.harness import USERNAME, Harness, harness_on
from tests.support.authenticator_backup_codes import BackupCodeSheet
from tests.support.authenticator_security_questions import SecurityAnswers
from tests.support.databases import sqlite_database
from tests.support.hashing import pool_full
from twofa.domain.client import NO_CLIENT
from twofa.security.hashing_pool import HashingBusy, HashingPool
from twofa.services.second_factor.failures import failure_key
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state.sessions import Level
from twofa.storage.audit_log import AuditLog
from twofa.storage.tables import ChallengeRow, CredentialRow, ThrottleRow

QUESTIONS = "security_questions"
CODES = "backup_codes"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with sqlite_database(tmp_path) as url, harness_on(url) as opened:
        yield opened


def pool_of(harness: Harness) -> HashingPool:
    assert harness.gateway.hashing is not None
    return harness.gateway.hashing


async def failures_counted(harness: Harness, code: str) -> int:
    async with harness.gateway.db.begin() as db:
        row = await db.get(ThrottleRow, failure_key(code, USERNAME))
    return row.failures if row is not None else 0


async def rows(harness: Harness, table: type[Any]) -> int:
    async with harness.gateway.db.begin() as db:
        counted: int = await db.scalar(select(func.count()).select_from(table)) or 0
    return counted


async def second_factor_outcomes(harness: Harness) -> list[str]:
    async with harness.gateway.db.begin() as db:
        recent = await AuditLog(db).recent(200, username=USERNAME)
    return [row.outcome for row in recent if row.kind == "second_factor"]


async def enrol_answers(harness: Harness) -> SecurityAnswers:
    person = SecurityAnswers()
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, QUESTIONS, NO_CLIENT)
    await harness.second_factor.finish_enrolment(
        session, QUESTIONS, started.challenge_id, person.enrolment_response(started.show, harness),
        NO_CLIENT,
    )  # fmt: skip
    return person


@pytest.mark.parametrize("code", [CODES, QUESTIONS])
async def test_hashes_run_in_the_pool_with_no_database_connection_held(
    harness: Harness, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set-up and sign-in alike: the hash runs in the gateway's pool (the one passwords use)
    and no connection, so no transaction and on SQLite no write lock, waits for it."""
    pool = pool_of(harness)
    held: list[int] = []
    run = pool.run

    async def watching(work: Callable[..., Any], *args: Any) -> Any:
        held.append(harness.gateway.engine.sync_engine.pool.checkedout())
        return await run(work, *args)

    monkeypatch.setattr(pool, "run", watching)
    person: BackupCodeSheet | SecurityAnswers = (
        BackupCodeSheet() if code == CODES else SecurityAnswers()
    )
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, code, NO_CLIENT)
    enrolled = await harness.second_factor.finish_enrolment(
        session, code, started.challenge_id, person.enrolment_response(started.show, harness),
        NO_CLIENT,
    )  # fmt: skip
    assert enrolled.completion is not None
    session = await harness.password_session()
    challenge = await harness.second_factor.start(session, code, NO_CLIENT)
    completion = await harness.second_factor.verify(
        session, code, challenge.challenge_id,
        person.verification_response(challenge.show, harness), NO_CLIENT,
    )  # fmt: skip

    assert completion.session.level is Level.SIGNED_IN
    # a password, the set-up's hashes, a password again, the answer's check: all in the pool
    assert held == [0, 0, 0, 0]


async def test_a_busy_pool_refuses_answers_unchecked_and_uncounted(harness: Harness) -> None:
    """Three answers an hour: a storm that fills the pool must not spend a user's tries on
    answers nobody looked at, nor lock them out."""
    person = await enrol_answers(harness)
    session = await harness.password_session()
    challenge = await harness.second_factor.start(session, QUESTIONS, NO_CLIENT)
    answers = person.verification_response(challenge.show, harness)
    before = await second_factor_outcomes(harness)

    async with pool_full(pool_of(harness)):
        for _ in range(5):  # more than the three tries an hour
            with pytest.raises(HashingBusy):
                await harness.second_factor.verify(
                    session, QUESTIONS, challenge.challenge_id, answers, NO_CLIENT
                )

    assert await failures_counted(harness, QUESTIONS) == 0
    assert await second_factor_outcomes(harness) == before  # nothing refused, nothing allowed
    with pytest.raises(SecondFactorError):  # a wrong answer, checked, still counts
        await harness.second_factor.verify(
            session, QUESTIONS, challenge.challenge_id, {"answer_1": "x"}, NO_CLIENT
        )
    assert await failures_counted(harness, QUESTIONS) == 1
    completion = await harness.second_factor.verify(
        session, QUESTIONS, challenge.challenge_id, answers, NO_CLIENT
    )
    assert completion.session.level is Level.SIGNED_IN


async def test_a_busy_pool_leaves_a_set_up_unfinished_and_uncounted(harness: Harness) -> None:
    person = SecurityAnswers()
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, QUESTIONS, NO_CLIENT)
    form = person.enrolment_response(started.show, harness)

    async with pool_full(pool_of(harness)):
        with pytest.raises(HashingBusy):
            await harness.second_factor.finish_enrolment(
                session, QUESTIONS, started.challenge_id, form, NO_CLIENT
            )
        assert await rows(harness, CredentialRow) == 0
        assert await failures_counted(harness, QUESTIONS) == 0
        # New backup codes are hashed before their set-up opens: nothing is opened.
        drafts = await rows(harness, ChallengeRow)
        with pytest.raises(HashingBusy):
            await harness.second_factor.begin_enrolment(session, CODES, NO_CLIENT)
        assert await rows(harness, ChallengeRow) == drafts

    enrolled = await harness.second_factor.finish_enrolment(
        session, QUESTIONS, started.challenge_id, form, NO_CLIENT
    )
    assert enrolled.completion is not None  # the same draft, once the pool is free

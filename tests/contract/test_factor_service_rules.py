"""SecondFactorService rules beyond the per-method contract: questions cannot be re-rolled, and no
page secret is left readable in the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.contract.authenticators import AUTHENTICATORS
from tests.contract.harness import Harness, harness_on
from tests.support.databases import sqlite_database
from twofa.domain.client import NO_CLIENT
from twofa.storage.tables import ChallengeRow


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with sqlite_database(tmp_path) as url, harness_on(url) as running:
        yield running


async def enrol(harness: Harness, code: str) -> None:
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, code, NO_CLIENT)
    response = AUTHENTICATORS[code]().enrolment_response(started.show, harness)
    await harness.second_factor.finish_enrolment(
        session, code, started.challenge_id, response, NO_CLIENT
    )


async def test_reloading_asks_the_same_questions_in_any_browser(harness: Harness) -> None:
    await enrol(harness, "security_questions")
    first = await harness.second_factor.start(
        await harness.password_session(), "security_questions", NO_CLIENT
    )
    for _ in range(5):
        again = await harness.second_factor.start(
            await harness.password_session(), "security_questions", NO_CLIENT
        )
        assert again.show["questions"] == first.show["questions"]
        assert again.challenge_id != first.challenge_id


async def test_no_totp_secret_is_readable_in_a_challenge_row(harness: Harness) -> None:
    session = await harness.password_session()
    started = await harness.second_factor.begin_enrolment(session, "totp", NO_CLIENT)
    secret = str(started.show["secret"]).replace(" ", "")
    async with harness.gateway.db.begin() as db:
        payloads = (await db.scalars(select(ChallengeRow.payload))).all()
    assert secret not in json.dumps(payloads)

"""A user deleted while their second factor is being answered, on PostgreSQL, where the two
transactions lock the same rows: the answer consumes the challenge and the credential's state,
then signs in (a session row whose foreign key holds the user's row); the deletion holds the
user's row, then its cascade removes the challenge, credentials and sessions. Taken in opposite
orders, those locks deadlock, and PostgreSQL breaks the deadlock by failing one side after a
second: an admin's deletion that errors, or a user's right code answered with a server error.

The promise: whichever comes first, both end cleanly. Either the answer signs in and the
deletion then ends that sign-in with the user, or the deletion goes first and the answer is
refused with a plain message; the deletion always goes through, and no answer is a 5xx."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_at
from tests.support.databases import postgres_database
from tests.support.feed_attacks import via
from tests.support.gateway import running_gateway, sign_in
from tests.support.revocation import database, started, until
from tests.support.tcp_proxy import TcpProxy, tcp_proxy_in_thread
from tests.support.totp_flow import enrol_alice, sign_out, submit_code
from tests.support.two_factor import allow_methods
from twofa.storage.challenges import Challenges
from twofa.storage.database import create_engine, session_factory
from twofa.storage.repositories import Users
from twofa.storage.tables import ChallengeRow, UserRow


@pytest.mark.parametrize(
    "slow_statement",
    [
        # The deletion comes while the answer has consumed the challenge and the credential:
        # it waits for the sign-in, then ends it. (Broke at 1555335: a deadlock, the answer
        # failed with a 500 after a second.)
        b"INSERT INTO sessions",
        # The deletion comes first: the answer finds the user gone and is refused.
        b"UPDATE challenges",
    ],
)
async def test_a_right_code_racing_the_users_deletion_ends_cleanly_either_way(
    tmp_path: Path, simulator: RunningSimulator, slow_statement: bytes
) -> None:
    """alice answers her authenticator code; one statement of the answer's transaction is slow
    to reach PostgreSQL (1.5 s). Meanwhile an admin deletes alice through another gateway
    process."""
    async with database("postgresql", tmp_path) as db_url:
        with tcp_proxy_in_thread("127.0.0.1", 5432) as answer_path:
            await answer_and_delete(db_url, answer_path, simulator, slow_statement)


def statements_in_full(database_url: str) -> str:
    """Each statement's text sent every time (no prepared statements kept per connection), so
    the proxy can tell which one is on its way."""
    return f"{database_url}?prepared_statement_cache_size=0"


async def answer_and_delete(
    db_url: str, answer_path: TcpProxy, simulator: RunningSimulator, slow_statement: bytes
) -> None:
    async with (
        running_gateway(statements_in_full(via(db_url, answer_path.port)), simulator) as (
            base_url,
            settings,
        ),
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
    ):
        await allow_methods(settings, ("totp",), first_method="totp")
        secret = await enrol_alice(client)  # with this step's code: the answer gives the next
        await sign_out(client)
        assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
        page = await client.get("/2fa/m/totp")
        answer_path.hold_up_pattern, answer_path.hold_up_seconds = slow_statement, 1.5
        answering = asyncio.create_task(
            submit_code(client, "/2fa/m/totp", page, code_at(secret, +1))
        )
        assert await until(lambda: answer_path.held_up == 1, 5), "the slow statement never came"
        async with started(settings.model_copy(update={"database_url": db_url})) as admin_node:
            await asyncio.wait_for(admin_node.accounts.delete_user("alice"), 10)  # no error
            answer = await asyncio.wait_for(answering, 10)
            async with admin_node.db() as db:
                assert await Users(db).by_name("alice") is None

        assert answer.status_code < 500, answer.text
        if slow_statement == b"INSERT INTO sessions":  # signed in; the deletion ended it
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"].startswith("/2fa/after")
        else:
            assert answer.status_code == 400, answer.text
            assert "Please sign in again." in answer.text  # her session went with her
        home = await client.get("/")
        assert home.status_code == 303
        assert home.headers["location"].startswith("/login")


async def test_the_challenge_sweep_skips_rows_another_transaction_holds() -> None:
    """The once-a-minute sweep of expired challenges runs inside a transaction that opens a
    challenge; waiting there for a row a deletion of its user holds could deadlock with it.
    It leaves such rows for the next sweep, at once, and removes the rest."""
    async with postgres_database() as url:
        engine = create_engine(url)
        factory = session_factory(engine)
        try:
            now = datetime.now(UTC)
            async with factory.begin() as db:
                user = UserRow(username="carol", created_at=now)
                db.add(user)
                await db.flush()
                for name in ("held", "free"):
                    db.add(expired_challenge(name, user.id, now))
            async with factory.begin() as holder:
                await holder.execute(
                    select(ChallengeRow.id).where(ChallengeRow.id == "held").with_for_update()
                )
                async with factory.begin() as sweeper:
                    removed = await asyncio.wait_for(Challenges(sweeper).remove_expired(now), 5)
            assert removed == 1
            async with factory() as db:
                left = (await db.scalars(select(ChallengeRow.id))).all()
            assert left == ["held"]
        finally:
            await engine.dispose()


def expired_challenge(challenge_id: str, user_id: int, now: datetime) -> ChallengeRow:
    return ChallengeRow(
        id=challenge_id,
        user_id=user_id,
        session_id="s",
        method="totp",
        purpose="validate",
        status="pending",
        created_at=now - timedelta(hours=2),
        expires_at=now - timedelta(hours=1),
        payload={},
    )

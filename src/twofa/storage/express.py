"""The express lane for answering a code method on PostgreSQL: the statements that open a
challenge and take its answer in two or three round trips, on a small asyncpg pool of their own.

The ORM path costs 14-16 ms of CPU per TOTP verification, most of it SQLAlchemy bookkeeping
around eleven small statements (bench/README.md); these do the same reads and writes as
`FactorService.start` and `.verify` with no ORM and no explicit transaction:

- `open_challenge`: ONE statement finds the live session (level, idle and absolute expiry)
  with its enabled user, checks the user has a credential of the method and that the method
  is not locked for them, touches the session as `SessionService.load` would, INSERTs the
  challenge bound to that session and user, and returns what answering it needs.
- `read_answer`: ONE read of the same, with the pending challenge bound to both; the lane
  skips it when it kept what `open_challenge` returned.
- `take_attempt` (and `give_back`): the attempt counter's own statements
  (storage.repositories.Throttles, compiled once for asyncpg), so the lane counts before it
  checks a code exactly as the general path does.
- `write_answer`: ONE statement whose links gate each other: the conditional consume of the
  challenge (itself gated as the read is: live session at a verifying level, enabled user,
  so it is safe without a read just before; the lock-out is the counted attempt's business),
  the version-checked credential state, the session replaced by a signed-in one, the audit
  row and the failure counter's reset. If the consume matched but a later link did not (a
  racing sign-in changed the credential, the session was ended), the final SELECT divides by
  zero and PostgreSQL rolls the whole statement back: nothing is written unless everything is.

Every time comes from the caller (the injected clock), never from the database's `now()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from twofa.errors import TwofaError
from twofa.storage.repositories import CountedAttempt, Throttles

OPEN_CHALLENGE: Final = """WITH s AS (
  SELECT s.id, s.user_id, s.level, s.csrf_token, u.username, u.display_name, u.email
  FROM sessions s JOIN users u ON u.id = s.user_id
  WHERE s.id = $1 AND s.level = ANY($9::int[]) AND s.expires_at > $2 AND s.last_seen_at > $3
    AND u.enabled
    AND EXISTS (SELECT 1 FROM credentials c WHERE c.user_id = u.id AND c.method = $5)
    AND NOT EXISTS (SELECT 1 FROM throttle t WHERE t.key = $6 || lower(u.username)
                    AND t.locked_until > $2)
), touched AS (
  UPDATE sessions SET last_seen_at = $2
  WHERE id = $1 AND last_seen_at <= $7 AND EXISTS (SELECT 1 FROM s)
), opened AS (
  INSERT INTO challenges (id, user_id, session_id, method, purpose, status, created_at,
                          expires_at, payload)
  SELECT $4, s.user_id, s.id, $5, 'validate', 'pending', $2, $8, $10::json FROM s
  RETURNING user_id
)
SELECT s.user_id, s.level, s.csrf_token, s.username, s.display_name, s.email,
  $6 || lower(s.username), c.id, c.label, c.secret_sealed, c.state, c.version
FROM s JOIN opened ON opened.user_id = s.user_id
JOIN credentials c ON c.user_id = s.user_id AND c.method = $5"""  # AnswerContext's columns

READ_ANSWER: Final = """SELECT s.user_id, s.level, s.csrf_token, u.username, u.display_name,
  u.email, $5 || lower(u.username), c.id, c.label, c.secret_sealed, c.state, c.version
FROM sessions s
JOIN users u ON u.id = s.user_id
JOIN challenges ch ON ch.id = $2 AND ch.session_id = s.id AND ch.user_id = s.user_id
  AND ch.method = $4 AND ch.purpose = 'validate' AND ch.consumed_at IS NULL
  AND ch.expires_at > $3
JOIN credentials c ON c.user_id = s.user_id AND c.method = $4
WHERE s.id = $1 AND s.level = ANY($7::int[]) AND s.expires_at > $3 AND s.last_seen_at > $6
  AND u.enabled
  AND NOT EXISTS (SELECT 1 FROM throttle t WHERE t.key = $5 || lower(u.username)
                  AND t.locked_until > $3)"""  # AnswerContext's columns

# Gated as the read is (live session at a verifying level, enabled user), so it is safe on its
# own: the lane may skip the read when it kept the page's context. No lock-out gate: the lane
# writes only under an attempt it counted first and found allowed (`take_attempt`), as the
# general path consumes a challenge under its counted attempt.
WRITE_ANSWER: Final = """WITH consumed AS (
  UPDATE challenges SET consumed_at = $4, status = 'allow', payload = NULL
  WHERE id = $1 AND user_id = $3 AND session_id = $2 AND method = $19
    AND purpose = 'validate' AND consumed_at IS NULL AND expires_at > $4
    AND EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id
                WHERE s.id = $2 AND s.user_id = $3 AND s.level = ANY($17::int[])
                  AND s.expires_at > $4 AND s.last_seen_at > $18 AND u.enabled)
  RETURNING id
), stepped AS (
  UPDATE credentials SET state = $7::json, version = $6 + 1, last_used_at = $4
  WHERE id = $5 AND version = $6 AND EXISTS (SELECT 1 FROM consumed)
  RETURNING id
), ended AS (
  DELETE FROM sessions WHERE id = $2 AND user_id = $3 AND EXISTS (SELECT 1 FROM stepped)
  RETURNING user_id, next_url
), started AS (
  INSERT INTO sessions (id, user_id, level, csrf_token, next_url, created_at, last_seen_at,
                        expires_at, client_ip, user_agent, second_factor_at)
  SELECT $8, user_id, $16, $9, next_url, $4, $4, $10, $11, $12, $4 FROM ended
  RETURNING id
), audited AS (
  INSERT INTO audit_events (at, kind, outcome, username, client_ip, user_agent, detail)
  SELECT $4, 'second_factor', 'allow', $13, $11, $12, $14::json FROM started
  RETURNING id
), reset AS (
  DELETE FROM throttle WHERE key = $15 AND EXISTS (SELECT 1 FROM audited)
)
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM consumed) THEN 0
  ELSE 1 / (SELECT count(*)::int FROM audited) END"""


class _AsyncpgStatement:
    """A SQLAlchemy Core statement compiled once for asyncpg: its text and its arguments in
    order (the compiled statement's own literals included)."""

    def __init__(self, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        assert isinstance(compiled, SQLCompiler)
        self._compiled = compiled
        self.sql = str(compiled)

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = self._compiled.construct_params(params) or {}
        return [values[name] for name in self._compiled.positiontup or ()]


TAKE_ATTEMPT: Final = _AsyncpgStatement(Throttles.counting_statement("postgresql"))
GIVE_BACK: Final = tuple(_AsyncpgStatement(s) for s in Throttles.give_back_statements())


class ExpressUnavailable(TwofaError):
    """The lane's database connection failed (the lane hands the request to the general
    path, which has its own connections and its own error page)."""


@contextmanager
def _unavailable_as_typed() -> Iterator[None]:
    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ExpressUnavailable(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class SessionWindow:
    """What makes a session live at `now` (the times `SessionService.load` checks)."""

    now: datetime
    idle_since: datetime  # last seen after this, or it idled out
    touch_before: datetime  # last seen before this: record that it was seen now
    levels: tuple[int, ...]  # the session levels that may answer


@dataclass(frozen=True)
class AnswerContext:
    user_id: int
    level: int
    csrf_token: str
    username: str
    display_name: str
    email: str
    lock_key: str
    credential_id: int
    label: str
    secret_sealed: str | None
    state: str  # JSON text
    version: int


@dataclass(frozen=True)
class AnswerWrite:
    challenge_id: str
    method: str
    session_id: str
    user_id: int
    now: datetime
    credential_id: int
    version_read: int
    new_state: str  # JSON text
    new_session_id: str
    new_csrf_token: str
    new_session_expires_at: datetime
    signed_in_level: int
    client_ip: str
    user_agent: str
    username: str
    audit_detail: str  # JSON text
    lock_key: str
    levels: tuple[int, ...]  # the session levels that may answer
    idle_since: datetime


class ExpressStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, database_url: str, max_connections: int = 10) -> ExpressStore | None:
        """A store for a PostgreSQL database; None for any other (SQLite has no express lane).
        Connections are made when first needed."""
        url = make_url(database_url)
        if url.get_backend_name() != "postgresql":
            return None
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=max_connections, reset=_keep_connection
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def open_challenge(
        self,
        session_id: str,
        window: SessionWindow,
        challenge_id: str,
        method: str,
        lock_key_prefix: str,
        expires_at: datetime,
        payload: str,
    ) -> Sequence[AnswerContext]:
        """The opened challenge's context, one per credential of the method (none: the
        session may not open one now, and none was opened)."""
        with _unavailable_as_typed():
            rows = await self._pool.fetch(
                OPEN_CHALLENGE,
                session_id,
                window.now,
                window.idle_since,
                challenge_id,
                method,
                lock_key_prefix,
                window.touch_before,
                expires_at,
                list(window.levels),
                payload,
            )
        return [AnswerContext(*row) for row in rows]

    async def read_answer(
        self,
        session_id: str,
        challenge_id: str,
        window: SessionWindow,
        method: str,
        lock_key_prefix: str,
    ) -> Sequence[AnswerContext]:
        """The answer's context, one per credential of the method (none: not answerable)."""
        with _unavailable_as_typed():
            rows = await self._pool.fetch(
                READ_ANSWER,
                session_id,
                challenge_id,
                window.now,
                method,
                lock_key_prefix,
                window.idle_since,
                list(window.levels),
            )
        return [AnswerContext(*row) for row in rows]

    async def take_attempt(
        self, key: str, limit: int, window: timedelta, lockout: timedelta, now: datetime
    ) -> CountedAttempt:
        """Counts one attempt (committed on return: the statement runs on its own)."""
        params = Throttles.counting_params(key, limit, window, lockout, now)
        with _unavailable_as_typed():
            row = await self._pool.fetchrow(TAKE_ATTEMPT.sql, *TAKE_ATTEMPT.arguments(params))
        return CountedAttempt(int(row[0]), row[1], row[2])

    async def give_back(self, key: str, window_started_at: datetime, limit: int) -> None:
        params = Throttles.give_back_params(key, window_started_at, limit)
        with _unavailable_as_typed():
            for statement in GIVE_BACK:
                await self._pool.execute(statement.sql, *statement.arguments(params))

    async def write_answer(self, write: AnswerWrite) -> bool:
        """True when everything was written; False when nothing was (the challenge was used
        or expired, or a racing request changed the credential or ended the session)."""
        with _unavailable_as_typed():
            try:
                written: Any = await self._pool.fetchval(
                    WRITE_ANSWER,
                    write.challenge_id,
                    write.session_id,
                    write.user_id,
                    write.now,
                    write.credential_id,
                    write.version_read,
                    write.new_state,
                    write.new_session_id,
                    write.new_csrf_token,
                    write.new_session_expires_at,
                    write.client_ip,
                    write.user_agent,
                    write.username,
                    write.audit_detail,
                    write.lock_key,
                    write.signed_in_level,
                    list(write.levels),
                    write.idle_since,
                    write.method,
                )
            except asyncpg.DivisionByZeroError:  # consumed, but a later link did not match
                return False
        return bool(written == 1)


async def _keep_connection(connection: asyncpg.Connection) -> None:
    """The pool's reset on release. These statements run in autocommit and leave no session
    state behind, and asyncpg's default reset costs a round trip per release; only a
    connection left inside a transaction (it cannot be, but if) is rolled back."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")

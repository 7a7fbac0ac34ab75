"""The change feed on PostgreSQL alone (no Redis): each committing transaction that noted a
change sends it with `pg_notify` inside the transaction, so it goes out if and only if the
commit does (never lost between a commit and a publish); every process LISTENs on one
connection of its own, outside the pool, and pings it four times a second to notice a cut path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from twofa.services.state.change_feed import ChangeFeed, batches
from twofa.services.state.feed_keys import FeedKeys
from twofa.services.state.feed_state import HEARTBEAT_S, SILENCE_LIMIT_S, FeedState
from twofa.storage.change_notes import Changes

CHANNEL: Final = "twofa_changes"
CONNECT_TIMEOUT_S: Final = 5.0
APPLICATION_NAME: Final = "twofa change feed"  # how an admin finds it in pg_stat_activity


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")  # built once: every sign-in sends one


class PostgresChangeFeed(ChangeFeed):
    kind = "postgresql"

    def __init__(
        self,
        engine: AsyncEngine,
        on_change: Callable[[Changes], None],
        state: FeedState | None = None,
        channel: str = CHANNEL,
        *,
        keys: FeedKeys,
    ) -> None:
        super().__init__(on_change, state, keys)
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._channel = channel

    def send_in(self, session: Session, changes: Changes) -> None:
        """Inside the committing transaction (storage.change_notes.before_each_commit)."""
        for batch in batches(changes):
            session.execute(_NOTIFY, {"channel": self._channel, "payload": self._sealed(batch)})

    def announce(self, changes: Changes) -> None:
        """Nothing to do after the commit: the transaction sent it."""

    async def _follow(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_S,
            server_settings={"application_name": APPLICATION_NAME},
        )
        closed = asyncio.Event()
        connection.add_termination_listener(lambda _: closed.set())
        try:
            await connection.add_listener(
                self._channel, lambda _c, _pid, _channel, payload: self._heard(payload, CHANNEL)
            )
            self.state.connected()
            while not closed.is_set():
                await asyncio.sleep(HEARTBEAT_S)
                await connection.fetchval("SELECT 1", timeout=SILENCE_LIMIT_S)
                self.state.heard()
            raise ConnectionError("the PostgreSQL connection that listens was closed")
        finally:
            connection.terminate()

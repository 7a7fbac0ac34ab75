"""Forward-auth's copy of the sessions in use on this node, so the check on every request of
every protected application is answered from memory.

How long a copy may be answered depends on whether this process hears the others (a change
feed of `services.state`, live since before the copy was read):

- **feed live**: until the session would end by itself (idle window or absolute lifetime,
  counted on this node's own record of its use) and at most the feed's `trust_seconds`. Every way a
  session or its user changes elsewhere (sign-out, new password, 2FA reset, disabled account,
  groups) arrives as a message that drops the copy (`forget_*`), within a message's flight.
- **feed lost, or none**: `CHECK_SECONDS`, as if there were no cache to speak of: a change
  anywhere is seen within that second. A feed that drops and comes back starts a new
  generation, and nothing read before is trusted long again (messages may have been missed).

A copy in use is read again in the background before it runs out, so a busy session never
makes requests wait for the database; one read per session at a time, every request in
flight for it awaiting the same one. A use answered from memory is passed on to the session
store (`SessionService.seen`), so the session's idle window starts again in the database too.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, TypeVar

from twofa.clock import Clock
from twofa.security.tokens import token_digest
from twofa.services.state.feed_state import FeedState
from twofa.services.state.sessions import TOUCH_EVERY, SessionService
from twofa.telemetry import SESSION_CACHE

CHECK_SECONDS: Final = 1.0
# A copy in use is refreshed in the background from `limit - margin` on.
REFRESH_MARGIN_SECONDS: Final = 30.0
ENTRIES: Final = 100_000
_HITS: Final = SESSION_CACHE.labels(result="hit")
_MISSES: Final = SESSION_CACHE.labels(result="miss")

Identity = TypeVar("Identity")


# Slotted: a node keeps one of each per session in use, and the collector walks them all.
@dataclass(frozen=True, slots=True)
class Loaded(Generic[Identity]):
    """What a read found for a live session: who it is, and when it ends if unused."""

    identity: Identity
    user_id: int
    session_id: str
    seen_at: datetime
    expires_at: datetime


@dataclass(slots=True)
class _Copy(Generic[Identity]):
    read_at: float  # monotonic, when the read began
    generation: int | None  # the feed's connection when the read began; None: feed not live
    found: Loaded[Identity] | None  # None: no live signed-in session for this token
    seen_at: datetime | None = None  # this node's record of the session's last use


class SessionCache(Generic[Identity]):
    def __init__(
        self,
        read: Callable[[str], Awaitable[Loaded[Identity] | None]],
        sessions: SessionService,
        feed: FeedState,
        clock: Clock,
        *,
        on_answer: Callable[[Identity], None] | None = None,
    ) -> None:
        """`read` reads a token's session from the database; `on_answer` sees every identity
        answered (directory groups that are due a refresh start one from there)."""
        self._read = read
        self._sessions = sessions
        self._feed = feed
        self._clock = clock
        self._on_answer = on_answer
        self._copies: OrderedDict[str, _Copy[Identity]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Loaded[Identity] | None]] = {}
        # Reads a change overtook: whoever waits on one reads again (it may predate the change).
        self._overtaken: weakref.WeakSet[asyncio.Future[Loaded[Identity] | None]] = (
            weakref.WeakSet()
        )
        self._keys_of_user: dict[int, set[str]] = {}  # forget_user without a scan of them all

    async def identity(self, token: str) -> Identity | None:
        key = token_digest(token)
        copy = self._copies.get(key)
        if copy is not None and self._answers(key, token, copy):
            _HITS.inc()
            found = copy.found
        else:
            _MISSES.inc()
            loading = self._loading.get(key) or self._start_read(key, token)
            found = await asyncio.shield(loading)
            if loading in self._overtaken:  # begun before a change to this session: again
                found = await self._read(token)
        if found is None:
            return None
        if self._on_answer is not None:
            self._on_answer(found.identity)
        return found.identity

    def _answers(self, key: str, token: str, copy: _Copy[Identity]) -> bool:
        """Whether `copy` may answer now (see the module's rules); on the way, a use is passed
        on to the session store when due, and a read started when the copy runs out soon."""
        now = self._clock.monotonic()
        age = now - copy.read_at
        found = copy.found
        trusted = (
            found is not None
            and copy.generation is not None
            and copy.generation == self._feed.live_generation
        )
        limit = self._feed.trust_seconds if trusted else CHECK_SECONDS
        if age >= limit:
            return False
        if found is not None:
            wall = self._clock.now()
            seen_at = copy.seen_at or found.seen_at
            if wall >= self._sessions.live_until(seen_at, found.expires_at):
                return False  # ended by itself: the read removes it and tells the others
            if wall - seen_at >= TOUCH_EVERY:
                self._sessions.seen(found.session_id, wall)
                copy.seen_at = wall
        if age >= limit - min(limit / 2, REFRESH_MARGIN_SECONDS) and key not in self._loading:
            self._start_read(key, token)
        return True

    def _start_read(self, key: str, token: str) -> asyncio.Future[Loaded[Identity] | None]:
        read_at = self._clock.monotonic()
        generation = self._feed.live_generation  # before the read: a message may come during it
        loading = asyncio.ensure_future(self._read(token))
        self._loading[key] = loading

        def remember(done: asyncio.Future[Loaded[Identity] | None]) -> None:
            if self._loading.get(key) is not done:
                return  # forgotten while it ran: its answer may predate the session's end
            del self._loading[key]
            if done.cancelled() or done.exception() is not None:
                return  # nothing kept: the next request reads again (and sees the error)
            found = done.result()
            self._copies[key] = _Copy(read_at, generation, found)
            self._copies.move_to_end(key)
            if found is not None:
                self._keys_of_user.setdefault(found.user_id, set()).add(key)
            while len(self._copies) > ENTRIES:
                self._drop(next(iter(self._copies)))

        loading.add_done_callback(remember)
        return loading

    def forget_session(self, session_id: str) -> None:
        """Drops a session that ended, and any read of it in flight: begun before the end, it
        would put the session back."""
        self._drop(session_id)
        self._overtake(self._loading.pop(session_id, None))

    def forget_user(self, user_id: int) -> None:
        """Drops every copy of a user's sessions (ended, or the user changed); reads in flight
        are of users not known yet, so all of them are dropped."""
        for key in list(self._keys_of_user.get(user_id, ())):
            self._drop(key)
        for loading in self._loading.values():
            self._overtake(loading)
        self._loading.clear()

    def _drop(self, key: str) -> None:
        copy = self._copies.pop(key, None)
        if copy is not None and copy.found is not None:
            keys = self._keys_of_user.get(copy.found.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of_user[copy.found.user_id]

    def _overtake(self, loading: asyncio.Future[Loaded[Identity] | None] | None) -> None:
        if loading is not None:
            self._overtaken.add(loading)

    def __len__(self) -> int:
        return len(self._copies)

    async def close(self, wait_seconds: float) -> None:
        """Lets the reads in flight finish before the database goes, so none is cut off half
        way through its transaction; one still running after `wait_seconds` is cancelled."""
        in_flight = list(self._loading.values())
        if not in_flight:
            return
        _, stalled = await asyncio.wait(in_flight, timeout=wait_seconds)
        for read in stalled:
            read.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)

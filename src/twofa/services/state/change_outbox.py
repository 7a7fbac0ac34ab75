"""The Redis change feed's backstop. Redis is told of a change after its commit; a node that
cannot reach Redis (a partition between it and Redis alone) commits a sign-out that nobody
hears, while every other node's feed stays live and trusts its copies. So, beside the feed,
each change the other processes must hear is also written in its own transaction to the
database (storage.change_outbox), and every process reads what the others wrote four times a
second: a change is heard within a second through the database even when Redis never carried it.
The Redis feed counts as live only while this outbox is being read (FeedState.follow_outbox): a
process that cannot read it checks its copies every second, as without a feed.

The messages are the feed's (change_feed.encoded); a process skips its own. Reading costs one
short statement per process per quarter second; writing one INSERT per commit that ends a signed-in
session or changes what others keep (never per sign-in: `Changes.shared`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from twofa.clock import Clock
from twofa.services.state.change_feed import CLOSE_WAIT_S, decoded, encoded, within
from twofa.services.state.feed_state import FeedState
from twofa.services.state.occasional_log import OccasionalLog
from twofa.storage import change_outbox
from twofa.storage.change_notes import Changes

READ_EVERY_S: Final = 0.25  # FeedState.OUTBOX_SILENCE_LIMIT_S is four reads
# An id below the newest read but not seen yet: a transaction that took it has not committed
# (PostgreSQL takes ids at INSERT and shows rows at COMMIT), or rolled back. Looked for again at
# each read for this long, far beyond any commit's delay; then given up, loudly.
GAP_WAIT_S: Final = 60.0
# A row is pruned once the pruning process has known of it this long, by its own monotonic
# clock (never another node's wall clock, which may be minutes off), the newest row never: a
# process that has not read for a second no longer trusts the feed (FeedState), and one that
# finds rows pruned that it never read starts a new generation (FeedState.outbox_read), judged
# by the ids, not by its clock (a suspended machine's monotonic clock stops).
KEEP_FOR_S: Final = 600.0
PRUNE_EVERY_S: Final = 60.0
# At start-up, missing ids this far below the newest are looked for (transactions on their way).
PRIME_WINDOW: Final = 1000
FAILURE_LOG_EVERY_S: Final = 10.0
log = logging.getLogger("twofa.change_feed")


class ChangeOutbox:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        node: str,
        on_change: Callable[[Changes], None],
        state: FeedState,
        read_every_s: float = READ_EVERY_S,
    ) -> None:
        """`node` names this process in what it writes (the feed's own name), so it skips
        its own rows; `on_change` gets the others' changes, in the event loop; `state` is the
        Redis feed's, live only while this outbox is read too."""
        self._db = db
        self._clock = clock
        self._node = node
        self._on_change = on_change
        self._state = state
        self._read_every_s = read_every_s
        self._newest_seen: int | None = None
        self._gaps: dict[int, float] = {}  # id -> when it was first missed (monotonic)
        self._quiet_gaps: set[int] = set()  # missing at start-up: given up without a warning
        self._applied: set[int] = set()  # ids read above the lowest gap
        self._noted_at = float("-inf")
        self._known_since: deque[tuple[float, int]] = deque()  # (monotonic, newest id seen)
        self._failed = OccasionalLog(log, logging.WARNING, FAILURE_LOG_EVERY_S, clock.monotonic)
        self._reading: asyncio.Task[None] | None = None

    def write_in(self, session: Session, changes: Changes) -> None:
        """Inside the committing transaction (storage.change_notes.before_each_commit)."""
        change_outbox.add_in(session, self._clock.now(), encoded(changes, self._node))

    async def start(self) -> None:
        """`prime`, then reads on in the background."""
        await self.prime()
        self._reading = asyncio.create_task(self._read_on())

    async def prime(self) -> None:
        """Notes where the outbox stands. Done before the process serves: a change written
        after a copy was made must never be taken for the starting point (what was written
        before it, the fresh caches do not hold). An id below the newest that is missing may
        belong to a transaction still on its way (PostgreSQL takes ids at INSERT): looked
        for like any other gap, down to the oldest row kept (below it, ids were pruned)."""
        started = self._clock.monotonic()
        async with self._db.begin() as db:
            newest = await change_outbox.newest_id(db)
            oldest = await change_outbox.oldest_id(db) or newest
            low = max(oldest, newest - PRIME_WINDOW)
            present = await change_outbox.ids_after(db, low)
        missing = set(range(low + 1, newest + 1)) - set(present)
        self._newest_seen = newest
        self._gaps = dict.fromkeys(missing, started)
        self._quiet_gaps = missing
        self._applied = {row_id for row_id in present if row_id > min(missing, default=newest)}
        self._state.follow_outbox(started)

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            await within(CLOSE_WAIT_S, self._reading, "stopping the change outbox's reader")

    async def _read_on(self) -> None:
        while True:
            await asyncio.sleep(self._read_every_s)
            try:
                await self.read_once()
            except Exception as exc:  # the database away: the pages say so; keep trying
                self._failed.say("could not read the change outbox (%s): trying again", exc)

    async def read_once(self) -> None:
        """Applies what the other processes wrote since the last read, and what has appeared
        in the gaps below it since; then tells the feed's state how fresh that is."""
        assert self._newest_seen is not None, "prime() first"
        floor = min(self._gaps, default=self._newest_seen + 1) - 1
        started = self._clock.monotonic()  # the snapshot read below is at least this fresh
        async with self._db.begin() as db:
            rows = await change_outbox.after(db, floor)
            oldest = await change_outbox.oldest_id(db)
            if (prunable := self._prunable()) is not None:
                await change_outbox.prune_through(db, prunable)
        for row_id, payload in rows:
            if row_id in self._applied:
                continue
            self._applied.add(row_id)
            self._gaps.pop(row_id, None)
            found = decoded(payload)
            if found is not None and found[0] != self._node:
                self._on_change(found[1])
        self._note_gaps([row_id for row_id, _ in rows])
        self._note_known()
        # Pruning leaves the newest row, so ids above the floor and below the oldest row kept
        # were pruned before this process read them (or rolled back: it cannot tell).
        gone = oldest is not None and oldest > floor + 1
        self._state.outbox_read(started, rows_may_be_gone=gone)

    def _prunable(self) -> int | None:
        """The newest id this process had read `KEEP_FOR_S` ago or earlier, by its own clock:
        everything up to it may go (None: nothing new to prune)."""
        now, prunable = self._clock.monotonic(), None
        while self._known_since and now - self._known_since[0][0] >= KEEP_FOR_S:
            prunable = self._known_since.popleft()[1]
        return prunable

    def _note_known(self) -> None:
        """Once per `PRUNE_EVERY_S`, what this process has read so far, and when."""
        now = self._clock.monotonic()
        if now - self._noted_at >= PRUNE_EVERY_S and self._newest_seen is not None:
            self._noted_at = now
            self._known_since.append((now, self._newest_seen))

    def waiting_for(self) -> set[int]:
        """The ids below the newest read that have not appeared yet."""
        return set(self._gaps)

    def _note_gaps(self, read: list[int]) -> None:
        assert self._newest_seen is not None
        now, newest = self._clock.monotonic(), max(read, default=self._newest_seen)
        present = set(read)
        for missing in range(self._newest_seen + 1, newest):
            if missing not in present:
                self._gaps[missing] = now
        self._newest_seen = max(self._newest_seen, newest)
        for row_id, missed_at in list(self._gaps.items()):
            if now - missed_at > GAP_WAIT_S:
                del self._gaps[row_id]  # rolled back, most likely; else its change is late
                if row_id in self._quiet_gaps:  # from before this process: nothing to say
                    self._quiet_gaps.discard(row_id)
                    continue
                log.warning(
                    "change outbox id %d never appeared in %.0f s: given up (a rolled-back "
                    "transaction, or one that took longer to commit)",
                    row_id,
                    GAP_WAIT_S,
                )
        floor = min(self._gaps, default=self._newest_seen + 1) - 1
        self._applied = {row_id for row_id in self._applied if row_id > floor}

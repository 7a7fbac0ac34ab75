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
session or changes what others keep (never per sign-in: `Changes.shared`).

An id below the newest read but not seen yet is awaited until every transaction that may have
taken it has ended (storage.change_outbox.Horizon): by the database's own account, never a
clock, so a commit held up for minutes (a stalled path, a suspended machine) is still read when
it lands."""

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
from twofa.storage.change_outbox import Horizon

READ_EVERY_S: Final = 0.25  # FeedState.OUTBOX_SILENCE_LIMIT_S is four reads
# At most this many ids are awaited; beyond it (ids that jumped) the lowest are given up, and
# as they are unknowable, nothing read before is trusted long (a new generation).
MOST_AWAITED: Final = 10_000
# At start-up the newest ids this many down are looked at for ids still on their way.
PRIME_SCAN: Final = 20_000
# A row is pruned once the pruning process has known of it this long, by its own monotonic
# clock (never another node's wall clock, which may be minutes off), and every transaction
# running when it read that far has ended (so nothing still on its way has a lower id); the
# newest row at or below that point never goes (storage.change_outbox): a process that has not
# read for a second no longer trusts the feed (FeedState), and one that finds rows pruned that
# it never read starts a new generation (FeedState.outbox_read), judged by the ids, not by its
# clock (a suspended machine's monotonic clock stops).
KEEP_FOR_S: Final = 600.0
PRUNE_EVERY_S: Final = 60.0
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
        # id -> a transaction id taken by the read that first missed it (None: SQLite): once
        # every one below it has ended, the id's writer has too
        self._gaps: dict[int, int | None] = {}
        # Taken for pruned (or never written): no news when given up. On an outbox never
        # pruned yet one may be a change on its way, and so may an id below the newest
        # PRIME_SCAN: two known limits (tests/integration/test_outbox_pruning_attacks.py).
        self._below_oldest_at_start: set[int] = set()
        self._noted_at = float("-inf")
        # (monotonic, newest id seen, a transaction id taken by that read)
        self._known_since: deque[tuple[float, int, int | None]] = deque()
        self._failed = OccasionalLog(log, logging.WARNING, FAILURE_LOG_EVERY_S, clock.monotonic)
        self._reading: asyncio.Task[None] | None = None

    def write_in(self, session: Session, changes: Changes) -> None:
        """Inside the committing transaction (storage.change_notes.before_each_commit)."""
        change_outbox.add_in(session, encoded(changes, self._node))

    async def start(self) -> None:
        """`prime`, then reads on in the background."""
        await self.prime()
        self._reading = asyncio.create_task(self._read_on())

    async def prime(self) -> None:
        """Notes where the outbox stands. Done before the process serves: a change written
        after a copy was made must never be taken for the starting point (what was written
        before it, the fresh caches do not hold). An id missing below the newest may belong
        to a transaction still running (PostgreSQL takes ids at INSERT): awaited like any
        other gap (on SQLite, none can be)."""
        started = self._clock.monotonic()
        async with self._db.begin() as db:
            found = await change_outbox.standing(db, PRIME_SCAN)
            taken = await change_outbox.take_transaction_id(db)
        ids = found.newest_ids
        newest = ids[0] if ids else 0
        self._newest_seen = newest
        if taken is not None:
            low = ids[-1] if len(ids) == PRIME_SCAN else 0
            missing = _missing_ids(low, newest, set(ids), MOST_AWAITED)
            self._gaps = dict.fromkeys(missing, taken)
            oldest = found.oldest if found.oldest is not None else newest + 1
            self._below_oldest_at_start = {row_id for row_id in missing if row_id < oldest}
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
        read_above = self._newest_seen
        started = self._clock.monotonic()  # the snapshot read below is at least this fresh
        async with self._db.begin() as db:
            found = await change_outbox.unread(db, read_above, set(self._gaps))
            new = [row_id for row_id, _ in found.rows if row_id > read_above]
            missing = _missing_ids(read_above, max(new, default=read_above), set(new), 1)
            taken = None
            if missing or self._mark_due():  # after this read's snapshot: above its writers'
                taken = await change_outbox.take_transaction_id(db)
            if (prunable := self._prunable(found.horizon)) is not None:
                await change_outbox.prune_through(db, prunable)
        for row_id, payload in found.rows:
            self._gaps.pop(row_id, None)
            message = decoded(payload)
            if message is not None and message[0] != self._node:
                self._on_change(message[1])
        gone = self._pruned_above(read_above, found.oldest)
        gone |= self._note_gaps(read_above, new, taken)
        gone |= self._settle_gaps(found.oldest, found.horizon)
        self._note_known(taken)
        self._state.outbox_read(started, rows_may_be_gone=gone)

    @staticmethod
    def _pruned_above(read_above: int, oldest: int | None) -> bool:
        """Whether rows above what this process had read were pruned before it read them
        (pruning keeps the newest at its point, so the oldest row kept would be above them).
        An outbox empty at start-up whose first row's id is above 1 looks the same: one new
        generation, at a cost in reads only."""
        return oldest is not None and oldest > read_above + 1

    def _note_gaps(self, read_above: int, new: list[int], taken: int | None) -> bool:
        """Notes the ids missing among the new ones; True if too many to await."""
        newest = max(new, default=read_above)
        self._newest_seen = max(read_above, newest)
        missing = _missing_ids(read_above, newest, set(new), MOST_AWAITED + 1)
        self._gaps.update(dict.fromkeys(missing, taken))
        if len(self._gaps) <= MOST_AWAITED:
            return False
        for row_id in sorted(self._gaps)[: len(self._gaps) - MOST_AWAITED]:
            del self._gaps[row_id]
        log.warning(
            "change outbox: more than %d ids missing (ids jumped?): the lowest are given up, "
            "and caches trust only what they read from now on",
            MOST_AWAITED,
        )
        return True

    def _settle_gaps(self, oldest: int | None, horizon: Horizon | None) -> bool:
        """Gives up the awaited ids whose transactions have all ended (or, on SQLite, any:
        writers take turns, so a missing id rolled back). True if one of them lies below the
        oldest row kept: it may have been written and pruned before this process read it."""
        gone = False
        for row_id, taken in list(self._gaps.items()):
            if not _all_ended(horizon, taken):
                continue
            del self._gaps[row_id]
            quiet = row_id in self._below_oldest_at_start
            self._below_oldest_at_start.discard(row_id)
            if oldest is not None and row_id < oldest and not quiet:
                gone = True
        if gone:
            log.warning(
                "change outbox: an id this process awaited is below the oldest row kept "
                "(written and pruned before it was read, or rolled back)"
            )
        return gone

    def _prunable(self, horizon: Horizon | None) -> int | None:
        """The newest id this process had read `KEEP_FOR_S` ago or earlier, by its own clock,
        once every transaction running then has ended: everything up to it may go (None:
        nothing new to prune)."""
        now, prunable = self._clock.monotonic(), None
        while self._known_since and now - self._known_since[0][0] >= KEEP_FOR_S:
            if not _all_ended(horizon, self._known_since[0][2]):
                break
            prunable = self._known_since.popleft()[1]
        return prunable

    def _mark_due(self) -> bool:
        return self._clock.monotonic() - self._noted_at >= PRUNE_EVERY_S

    def _note_known(self, taken: int | None) -> None:
        """Once per `PRUNE_EVERY_S`, what this process has read so far, and when."""
        if self._mark_due() and self._newest_seen is not None:
            self._noted_at = self._clock.monotonic()
            self._known_since.append((self._noted_at, self._newest_seen, taken))

    def waiting_for(self) -> set[int]:
        """The ids below the newest read that have not appeared yet."""
        return set(self._gaps)


def _all_ended(horizon: Horizon | None, taken: int | None) -> bool:
    """Whether every transaction whose id is below `taken` has ended by `horizon` (always,
    without them: SQLite's writers take turns)."""
    return horizon is None or taken is None or horizon.passed(taken)


def _missing_ids(low: int, newest: int, present: set[int], most: int) -> set[int]:
    """The ids above `low` below `newest` not in `present`, the highest `most` of them."""
    missing: set[int] = set()
    row_id = newest - 1
    while row_id > low and len(missing) < most:
        if row_id not in present:
            missing.add(row_id)
        row_id -= 1
    return missing

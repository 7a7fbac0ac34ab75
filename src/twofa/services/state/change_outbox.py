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
# A commit that lands this long after its outbox INSERT took its id is written again, in a
# transaction of its own, before the committing call returns: readers that gave up waiting
# for the id (below) read the copy, whose id is new. Readers wait longer than this for an id,
# and a starting reader looks back further, both by twice as much, for the clocks' sake.
LATE_COMMIT_S: Final = 30.0
# An id below the newest read but not seen yet: a transaction that took it has not committed
# (PostgreSQL takes ids at INSERT and shows rows at COMMIT), or rolled back. Looked for again at
# each read for this long; then given up, loudly (a commit later than LATE_COMMIT_S is written
# again under a new id).
GAP_WAIT_S: Final = 2 * LATE_COMMIT_S
# At start-up, ids missing above the newest row written this long ago by the database's clock
# are looked for like gaps (transactions on their way): any id taken since is above that row.
PRIME_LOOK_BACK_S: Final = 2 * LATE_COMMIT_S
PRIME_MOST_AWAITED: Final = 10_000  # the highest ones, should ids ever jump (a sequence reset)
# A row is pruned once the pruning process has known of it this long, by its own monotonic
# clock (never another node's wall clock, which may be minutes off), the newest at or below
# that point never (storage.change_outbox): a process that has not read for a second no longer
# trusts the feed (FeedState), and one that finds rows pruned that it never read starts a new
# generation (FeedState.outbox_read), judged by the ids, not by its clock (a suspended
# machine's monotonic clock stops).
KEEP_FOR_S: Final = 600.0
PRUNE_EVERY_S: Final = 60.0
FAILURE_LOG_EVERY_S: Final = 10.0
_WRITTEN_KEY: Final = "twofa.change_outbox.written"  # (monotonic, payload) in Session.info
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
        self._judged_gone: set[int] = set()  # gaps found below the oldest row: said once
        self._noted_at = float("-inf")
        self._known_since: deque[tuple[float, int]] = deque()  # (monotonic, newest id seen)
        self._failed = OccasionalLog(log, logging.WARNING, FAILURE_LOG_EVERY_S, clock.monotonic)
        self._reading: asyncio.Task[None] | None = None

    def write_in(self, session: Session, changes: Changes) -> None:
        """Inside the committing transaction (storage.change_notes.before_each_commit)."""
        payload = encoded(changes, self._node)
        session.info[_WRITTEN_KEY] = (self._clock.monotonic(), payload)
        change_outbox.add_in(session, payload)

    def transaction_ended(self, session: Session, committed: bool) -> None:
        """After each commit or rollback (storage.change_notes.after_each_end): a commit that
        took longer than `LATE_COMMIT_S` since its row was written has its row written again,
        under a new id, before the committing call returns."""
        written = session.info.pop(_WRITTEN_KEY, None)
        if not committed or written is None:
            return
        began, payload = written
        took = self._clock.monotonic() - began
        if took < LATE_COMMIT_S:
            return
        try:
            change_outbox.add_apart(session, payload)
        except Exception as exc:  # committed all the same; the caches' trust bounds the rest
            log.error(
                "a commit took %.0f s after its change outbox row was written, and writing "
                "the row again failed (%s): other processes may trust their copies for up to "
                "%.0f s more",
                took,
                exc,
                self._state.trust_seconds,
            )
            return
        log.warning(
            "a commit took %.0f s after its change outbox row was written: written again, for "
            "the readers that stopped waiting for its id",
            took,
        )

    async def start(self) -> None:
        """`prime`, then reads on in the background."""
        await self.prime()
        self._reading = asyncio.create_task(self._read_on())

    async def prime(self) -> None:
        """Notes where the outbox stands. Done before the process serves: a change written
        after a copy was made must never be taken for the starting point (what was written
        before it, the fresh caches do not hold). An id that is missing may belong to a
        transaction still on its way (PostgreSQL takes ids at INSERT): those above the newest
        row written `PRIME_LOOK_BACK_S` ago are looked for like any other gap; one below it,
        should it commit now, took longer than `LATE_COMMIT_S` and is written again."""
        started = self._clock.monotonic()
        async with self._db.begin() as db:
            newest, low = await change_outbox.newest_ids(db, PRIME_LOOK_BACK_S)
            present = set(await change_outbox.ids_after(db, low))
        missing = _missing_ids(low, newest, present, PRIME_MOST_AWAITED)
        self._newest_seen = newest
        self._gaps = dict.fromkeys(missing, started)
        self._quiet_gaps = missing
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
            rows = await change_outbox.unread(db, read_above, set(self._gaps))
            oldest = await change_outbox.oldest_id(db)
            if (prunable := self._prunable()) is not None:
                await change_outbox.prune_through(db, prunable)
        for row_id, payload in rows:
            self._gaps.pop(row_id, None)
            found = decoded(payload)
            if found is not None and found[0] != self._node:
                self._on_change(found[1])
        self._note_gaps(read_above, [row_id for row_id, _ in rows if row_id > read_above])
        self._note_known()
        gone = oldest is not None and (oldest > read_above + 1 or self._gaps_pruned(oldest))
        self._state.outbox_read(started, rows_may_be_gone=gone)

    def _gaps_pruned(self, oldest: int) -> bool:
        """Whether an id this process has waited for since it started is now below the oldest
        row: pruned before it was read, or rolled back (it cannot tell), said once per id. It
        waits on for it all the same: in an outbox never pruned yet, the id may be on its way."""
        below = {row_id for row_id in self._gaps if row_id < oldest} - self._quiet_gaps
        newly = below - self._judged_gone
        self._judged_gone |= newly
        return bool(newly)

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

    def _note_gaps(self, read_above: int, read: list[int]) -> None:
        """`read`: the ids above `read_above` this read found, oldest first."""
        now, newest = self._clock.monotonic(), max(read, default=read_above)
        present = set(read)
        for missing in range(read_above + 1, newest):
            if missing not in present:
                self._gaps[missing] = now
        self._newest_seen = max(read_above, newest)
        for row_id, missed_at in list(self._gaps.items()):
            if now - missed_at > GAP_WAIT_S:
                del self._gaps[row_id]  # rolled back, most likely; else written again anew
                self._judged_gone.discard(row_id)
                if row_id in self._quiet_gaps:  # from before this process: nothing to say
                    self._quiet_gaps.discard(row_id)
                    continue
                log.warning(
                    "change outbox id %d never appeared in %.0f s: given up (a rolled-back "
                    "transaction, or one that took longer to commit and writes its change "
                    "again)",
                    row_id,
                    GAP_WAIT_S,
                )


def _missing_ids(low: int, newest: int, present: set[int], most: int) -> set[int]:
    """The ids above `low` up to `newest` not in `present`, the highest `most` of them."""
    missing: set[int] = set()
    row_id = newest
    while row_id > low and len(missing) < most:
        if row_id not in present:
            missing.add(row_id)
        row_id -= 1
    return missing

"""Whether this process hears the other gateway processes now (a change feed of
`services.state` is connected), and which connection it is: caches that trust the feed
long compare the generation of their copy with the live one, so a copy read before a
disconnection, when messages may have been missed, is never trusted long again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from twofa.clock import Clock
from twofa.telemetry import CHANGE_FEED_CONNECTED

# With a live feed, a cached copy is read again this often anyway. PostgreSQL's NOTIFY goes out
# with the commit and a local datagram right after it, so little can be lost; a Redis message
# is published after the commit, and a node that dies or is cut off from Redis in between
# loses it: this bounds what that costs.
FEED_TRUST_SECONDS: Final = 300.0
REDIS_TRUST_SECONDS: Final = 30.0
# A feed that has said nothing for this long is not live, whether or not its connection has
# noticed yet (a path cut without a reset): every feed hears something 4 times a second.
SILENCE_LIMIT_S: Final = 1.0
HEARTBEAT_S: Final = 0.25
# Beside Redis, the change outbox is read four times a second (services.state.change_outbox);
# a process that has not read it for this long may miss what a node cut off from Redis alone
# committed, so it stops trusting its copies: no sign-out waits longer than this in the outbox.
OUTBOX_SILENCE_LIMIT_S: Final = 1.0
log = logging.getLogger("twofa.change_feed")


@dataclass(frozen=True)
class FeedReport:
    """What `twofa doctor` and the console's Status page say about the feed."""

    kind: str  # "redis", "postgresql", "local" or "none"
    live: bool
    since: datetime | None  # connected since, or lost since
    problem: str  # why it is not live; "" when it is


class FeedState:
    def __init__(self, kind: str, clock: Clock, silence_limit_s: float = SILENCE_LIMIT_S) -> None:
        self.kind = kind
        self._clock = clock
        self._silence_limit = silence_limit_s
        self._heard_at = float("-inf")
        self._generation = 0
        self._live = False
        self._since: datetime | None = None
        self._problem = "not connected yet" if kind != "none" else "no change feed configured"
        self._outbox_read_at = float("inf")  # no outbox to follow: never silent
        CHANGE_FEED_CONNECTED.set(0)

    @property
    def live_generation(self) -> int | None:
        """The live connection's number, or None while the feed is not live (lost, or silent
        for longer than the limit)."""
        if not self._live:
            return None
        now = self._clock.monotonic()
        if now - self._heard_at > self._silence_limit or self._outbox_silent(now):
            return None
        return self._generation

    @property
    def trust_seconds(self) -> float:
        """How long a copy read on this feed may be answered at most."""
        return REDIS_TRUST_SECONDS if self.kind == "redis" else FEED_TRUST_SECONDS

    @property
    def generation(self) -> int:
        """How many times the feed has connected (a reconnection is a new generation)."""
        return self._generation

    def heard(self) -> None:
        """The feed's connection said something (a message, or the answer to a ping)."""
        self._heard_at = self._clock.monotonic()

    def connected(self) -> None:
        self._generation += 1
        self._live = True
        self._heard_at = self._clock.monotonic()
        self._since = self._clock.now()
        self._problem = ""
        CHANGE_FEED_CONNECTED.set(1)
        if self._generation > 1:
            log.warning("%s change feed live again: caches trust it from now on", self.kind)

    def follow_outbox(self, read_at: float) -> None:
        """From now on the feed counts as live only while the change outbox is read too: what
        a node cut off from Redis alone commits reaches the others only there. `read_at`: when
        the read that primed it began (monotonic)."""
        self._outbox_read_at = read_at

    def outbox_read(self, began_at: float, *, rows_may_be_gone: bool = False) -> None:
        """A read of the change outbox that began at `began_at` (monotonic) succeeded and what
        it held is applied: what committed before then is known, so copies may be trusted
        until a second after it (a read that stalled half-way counts as old as it is).
        `rows_may_be_gone`: rows were pruned that this process never read, so, like a
        reconnection, it is a new generation and nothing cached before is trusted long."""
        now = self._clock.monotonic()
        if rows_may_be_gone:
            self._generation += 1
            log.warning(
                "change outbox: rows were pruned before this process read them (it was away "
                "%.0f s or more): caches trust only what they read from now on",
                now - self._outbox_read_at,
            )
        elif self._outbox_silent(now):
            log.warning("change outbox read again after %.1f s", now - self._outbox_read_at)
        self._outbox_read_at = max(self._outbox_read_at, began_at)

    def _outbox_silent(self, now: float) -> bool:
        return now - self._outbox_read_at > OUTBOX_SILENCE_LIMIT_S

    def lost(self, problem: str) -> None:
        if self._live:
            self._since = self._clock.now()
        self._live = False
        CHANGE_FEED_CONNECTED.set(0)
        self._problem = problem

    def report(self) -> FeedReport:
        silent_for = self._clock.monotonic() - self._outbox_read_at
        if self._live and silent_for > OUTBOX_SILENCE_LIMIT_S:
            problem = f"the change outbox has not been read for {silent_for:.0f} s"
            return FeedReport(self.kind, False, self._since, problem)
        return FeedReport(self.kind, self._live, self._since, self._problem)

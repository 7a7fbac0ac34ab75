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

# With a live feed, a cached copy is read again this often anyway: a message can be lost when
# a node dies between its commit and its publish (Redis), and this bounds what that costs.
FEED_TRUST_SECONDS: Final = 300.0
log = logging.getLogger("twofa.change_feed")


@dataclass(frozen=True)
class FeedReport:
    """What `twofa doctor` and the console's Status page say about the feed."""

    kind: str  # "redis", "postgresql", "local" or "none"
    live: bool
    since: datetime | None  # connected since, or lost since
    problem: str  # why it is not live; "" when it is


class FeedState:
    def __init__(self, kind: str, clock: Clock) -> None:
        self.kind = kind
        self._clock = clock
        self._generation = 0
        self._live = False
        self._since: datetime | None = None
        self._problem = "not connected yet" if kind != "none" else "no change feed configured"
        CHANGE_FEED_CONNECTED.set(0)

    @property
    def live_generation(self) -> int | None:
        """The live connection's number, or None while the feed is not live."""
        return self._generation if self._live else None

    def connected(self) -> None:
        self._generation += 1
        self._live = True
        self._since = self._clock.now()
        self._problem = ""
        CHANGE_FEED_CONNECTED.set(1)
        if self._generation > 1:
            log.warning("%s change feed live again: caches trust it from now on", self.kind)

    def lost(self, problem: str) -> None:
        if self._live:
            self._since = self._clock.now()
        self._live = False
        CHANGE_FEED_CONNECTED.set(0)
        self._problem = problem

    def report(self) -> FeedReport:
        return FeedReport(self.kind, self._live, self._since, self._problem)

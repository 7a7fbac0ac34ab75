"""A per-process copy of the console settings (every row of `console_settings`), so the hot
paths (a TOTP verification reads the Two Factor Settings and the method options several
times) do not read the database for them.

Freshness: at most once a second the copy compares the table's version (the sum of the rows'
versions, bumped by every save on any node) and reloads when it moved, so a console change
reaches every node within about a second; a save made in this process invalidates the copy at
once. One reload at a time (single flight): a burst of requests at the turn of a second asks
the database once. A failed check raises, so a request fails closed rather than running on
settings it cannot confirm.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.storage.repositories import ConsoleSettings

RECHECK_S: Final = 1.0


@dataclass
class SettingsSnapshot:
    """The rows as loaded (key → JSON value) and their version; `parsed` memoises what
    services build from a row, for as long as this snapshot is current."""

    version: int
    values: Mapping[str, Mapping[str, Any]]
    _parsed: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> dict[str, Any] | None:
        """A private copy of the row's value: callers may change it freely."""
        found = self.values.get(key)
        return copy.deepcopy(dict(found)) if found is not None else None

    def parsed(self, key: str, parse: Callable[[dict[str, Any] | None], Any]) -> Any:
        if key not in self._parsed:
            self._parsed[key] = parse(self.value(key))
        return self._parsed[key]


class SettingsCache:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._db = db
        self._recheck_s = recheck_s
        self._clock = clock
        self._snapshot: SettingsSnapshot | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped by `invalidate`: a reload begun before it is not kept

    def invalidate(self) -> None:
        """Called after a save in this process: the next read reloads."""
        self._generation += 1
        self._snapshot = None
        self._checked_at = float("-inf")

    async def snapshot(self) -> SettingsSnapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._clock.monotonic() - self._checked_at < self._recheck_s:
            return snapshot
        async with self._lock:
            if self._snapshot is not None and (
                self._clock.monotonic() - self._checked_at < self._recheck_s
            ):
                return self._snapshot  # another request refreshed it while this one waited
            generation = self._generation
            fresh = await self._refreshed(self._snapshot)
            if generation == self._generation:
                self._snapshot, self._checked_at = fresh, self._clock.monotonic()
            return fresh

    async def _refreshed(self, current: SettingsSnapshot | None) -> SettingsSnapshot:
        async with self._db.begin() as db:
            repo = ConsoleSettings(db)
            if current is not None and await repo.version_sum() == current.version:
                return current
            rows = await repo.all()
        values = {row.key: dict(row.value) for row in rows}
        return SettingsSnapshot(sum(row.version for row in rows), values)

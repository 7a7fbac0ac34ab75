"""Keeps a signed-in directory user's groups in step with their directory during a long
session. The forward-auth check hands over users whose groups are older than
`directory_groups_cache_s`; the directory is asked in the background, so no proxied request
ever waits for LDAP or Crowd, and the next session load sees the new groups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.directories.base import DirectoryUnavailable, ExternalDirectory
from twofa.services.signin.directory_users import sync_groups
from twofa.services.state import audit
from twofa.storage.repositories import Users
from twofa.storage.sessions import Sessions

log = logging.getLogger(__name__)

# A slow directory must not pile up work: a few questions at a time, and a bounded queue
# (a user left out is handed over again at their session's next load, a second later).
CONCURRENT_REFRESHES: Final = 4
PENDING_REFRESHES: Final = 1000


class RefreshOutcome(Enum):
    REFRESHED = "refreshed"  # the stored groups are the directory's now (changed or not)
    SIGNED_OUT = "signed_out"  # the directory no longer knows the user: sessions ended
    UNAVAILABLE = "unavailable"  # the directory could not be asked: stored groups kept
    SKIPPED = "skipped"  # the user is gone from twofa or moved to another directory


class GroupRefresher:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        directories: Sequence[ExternalDirectory],
        clock: Clock,
        max_age_s: int,
        *,
        concurrent: int = CONCURRENT_REFRESHES,
        pending: int = PENDING_REFRESHES,
    ) -> None:
        self._db = db
        self._directories = {directory.name: directory for directory in directories}
        self._clock = clock
        self._max_age = timedelta(seconds=max_age_s)
        self._limit = asyncio.Semaphore(concurrent)
        self._pending = pending
        self._running: dict[int, asyncio.Task[RefreshOutcome]] = {}
        # A directory that could not be asked is left alone for one interval: one question
        # per interval finds out when it is back, instead of one per signed-in user.
        self._down_until: dict[str, datetime] = {}

    def refresh_if_due(
        self, user_id: int, username: str, directory: str, synced_at: datetime | None
    ) -> None:
        """Starts a background refresh of a user's groups (last copied at `synced_at`) when
        they are too old; returns at once, and never raises into the caller's check."""
        if not self.due(directory, synced_at) or user_id in self._running:
            return
        if len(self._running) >= self._pending:
            return
        task = asyncio.create_task(self.refresh(user_id, username, directory))
        self._running[user_id] = task
        task.add_done_callback(lambda _: self._running.pop(user_id, None))

    def due(self, directory: str, synced_at: datetime | None) -> bool:
        if not self._max_age or directory not in self._directories:
            return False
        now = self._clock.now()
        down_until = self._down_until.get(directory)
        if down_until is not None and now < down_until:
            return False
        return synced_at is None or now - synced_at >= self._max_age

    async def wait_idle(self) -> None:
        """Waits for the refreshes under way (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def refresh(self, user_id: int, username: str, directory_name: str) -> RefreshOutcome:
        """Asks the user's directory for their groups (outside any transaction: it is a
        network call) and applies the answer."""
        directory = self._directories[directory_name]
        asked_at = self._clock.now()  # the next try counts from the question, not the answer
        try:
            async with self._limit:
                groups = await directory.groups_of(username)
        except DirectoryUnavailable as exc:
            await self._directory_down(directory_name, username, str(exc), asked_at)
            return RefreshOutcome.UNAVAILABLE
        except Exception as exc:  # a bug or a surprise must not kill the refresher
            log.exception("refreshing the groups of %s from %s failed", username, directory_name)
            await self._directory_down(directory_name, username, repr(exc), asked_at)
            return RefreshOutcome.UNAVAILABLE
        if self._down_until.pop(directory_name, None) is not None:
            log.warning("directory %s answers again; group refreshes resume", directory_name)
        return await self._apply(user_id, directory_name, groups)

    async def _apply(
        self, user_id: int, directory_name: str, groups: tuple[str, ...] | None
    ) -> RefreshOutcome:
        now = self._clock.now()
        async with self._db.begin() as db:
            users = Users(db)
            user = await users.by_id(user_id)
            if user is None or user.directory != directory_name:
                return RefreshOutcome.SKIPPED
            if groups is None:  # fail closed: whoever this was, the directory disowns them
                await Sessions(db).remove_for_user(user.id)
                user.groups_synced_at = now
                audit.record(
                    db,
                    self._clock,
                    "directory",
                    "user_gone",
                    username=user.username,
                    directory=directory_name,
                    sessions="ended",
                )
                return RefreshOutcome.SIGNED_OUT
            before = set(await users.group_names(user.id))
            await sync_groups(db, user, groups, now)
            after = set(await users.group_names(user.id))
            if before != after:
                audit.record(
                    db,
                    self._clock,
                    "directory",
                    "groups_refreshed",
                    username=user.username,
                    directory=directory_name,
                    added=sorted(after - before),
                    removed=sorted(before - after),
                )
        return RefreshOutcome.REFRESHED

    async def _directory_down(
        self, directory_name: str, username: str, error: str, asked_at: datetime
    ) -> None:
        """Keeps the stored groups and tries again in one interval; the first failure of an
        outage is audited, the later ones only logged."""
        first = directory_name not in self._down_until
        self._down_until[directory_name] = asked_at + self._max_age
        log.warning(
            "directory %s could not be asked for the groups of %s (%s); keeping the stored "
            "groups, next try in %s",
            directory_name,
            username,
            error,
            self._max_age,
        )
        if first:
            async with self._db.begin() as db:
                audit.record(
                    db,
                    self._clock,
                    "directory",
                    "groups_refresh_unavailable",
                    username=username,
                    directory=directory_name,
                    error=error,
                )

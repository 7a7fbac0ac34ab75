"""The access rules forward-auth decides with, kept compiled in memory: the settings file's and
the console's. A request never reads the database for them; at most once a second
(`RECHECK_S`) one request starts a background check of the console rules' version, and the
rules are reloaded only when it changed, so every node follows a console edit within about a
second while other requests go on with the rules they have (single flight, never a queue).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from twofa.clock import Clock
from twofa.domain.access import RuleSet
from twofa.services.access.rules import AccessRuleService

RECHECK_S: Final = 1.0
log = logging.getLogger("twofa.access")


class LiveConsoleRules:
    def __init__(
        self,
        rules: AccessRuleService,
        clock: Clock,
        *,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._rules = rules
        self._recheck_s = recheck_s
        self._clock = clock
        self._current: RuleSet | None = None
        self._checked_at = float("-inf")
        self._first_load: asyncio.Future[RuleSet] | None = None
        self._recheck: asyncio.Task[None] | None = None

    async def current(self) -> RuleSet:
        """The rules in force. Only the very first call waits for the database: deciding
        without the console's rules could let through what a console rule denies."""
        current = self._current
        if current is None:
            return await self._load_first()
        now = self._clock.monotonic()
        if now - self._checked_at >= self._recheck_s and self._recheck is None:
            self._checked_at = now
            self._recheck = asyncio.create_task(self._reload_if_changed(current.version))
            self._recheck.add_done_callback(self._recheck_done)
        return current

    async def fresh(self) -> RuleSet:
        """The rules as saved right now, for `explain` (an admin just edited them)."""
        rule_set = await self._rules.rule_set()
        self._adopt(rule_set)
        return rule_set

    def changed_elsewhere(self) -> None:
        """Another process changed the rules (services.state.change_feed): the next request starts
        the reload instead of waiting for the second to pass."""
        self._checked_at = float("-inf")

    async def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            await asyncio.gather(self._recheck, return_exceptions=True)

    async def _load_first(self) -> RuleSet:
        loading = self._first_load
        if loading is None:
            loading = self._first_load = asyncio.ensure_future(self.fresh())
            try:
                return await loading
            finally:
                self._first_load = None  # a failed load is tried again by the next request
        return await asyncio.shield(loading)

    async def _reload_if_changed(self, known_version: int) -> None:
        if await self._rules.version() != known_version:
            self._adopt(await self._rules.rule_set())

    def _adopt(self, rule_set: RuleSet) -> None:
        # Always the newest read, even with a lower version (a restored database); a slower
        # read overtaking a newer one is put right by the next second's check.
        self._current = rule_set
        self._checked_at = self._clock.monotonic()

    def _recheck_done(self, task: asyncio.Task[None]) -> None:
        self._recheck = None
        if not task.cancelled() and (error := task.exception()) is not None:
            # Keep deciding with the rules we have; the next second tries again.
            log.warning("could not recheck the console's access rules: %r", error)

"""Edits of one method's options, the console setting `method.<code>` (the security question
pool, who chooses the e-mail address, the name authenticator apps show): read from the
gateway's settings cache, like every other console setting; changed and written in one
transaction, the row locked where the database can (PostgreSQL) so two admins editing at once
do not lose each other's change; audited with before and after; the cache told at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.second_factor.gate import options_key
from twofa.services.settings.cache import SettingsCache
from twofa.services.state import audit
from twofa.storage.repositories import ConsoleSettings
from twofa.storage.tables import ConsoleSettingRow

Options = dict[str, Any]


def _stored(value: Options | None) -> Options:
    return dict(value or {})


class MethodOptions:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        cache: SettingsCache,
        code: str,
        audit_kind: str,
        complete: Callable[[Options | None], Options] = _stored,
    ) -> None:
        """`complete` turns what is stored (None before the first save) into the options in
        force, defaults filled in: what `read` returns, `edit`'s change gets and the audit
        shows as before."""
        self._db = db
        self._clock = clock
        self._cache = cache
        self._key = options_key(code)
        self._audit_kind = audit_kind
        self._complete = complete

    async def read(self) -> tuple[Options, bool]:
        """The options in force, and whether an admin ever saved any."""
        stored = (await self._cache.snapshot()).value(self._key)
        return self._complete(stored), stored is not None

    async def edit(
        self, change: Callable[[Options], Options | None], actor: str, client: ClientInfo
    ) -> tuple[Options, bool]:
        """`change` returns the new options, or None to leave them (nothing written or
        audited); an exception from it (SettingsRejected) rolls back. Returns the options
        in force afterwards and whether they changed."""
        async with self._db.begin() as db:
            row = await db.get(ConsoleSettingRow, self._key, with_for_update=True)
            before = self._complete(dict(row.value) if row is not None else None)
            after = change(dict(before))
            if after is None:
                return before, False
            await ConsoleSettings(db).upsert(self._key, after, self._clock.now(), actor)
            audit.record(
                db,
                self._clock,
                self._audit_kind,
                "saved",
                username=actor,
                client=client,
                before=before,
                after=after,
            )
        self._cache.invalidate()
        return after, True

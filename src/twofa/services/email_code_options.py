"""Who picks the address codes by e-mail go to: the account (its directory or console address,
the default) or the user at set-up, proving it with a first code. The method option
`method.email_otp`, edited from the console's E-mail Settings and `twofa smtp addresses`.

Letting users choose serves accounts without an address and people who want codes at a
mailbox they can still read when the work one is what they are locked out of; the price is
that an address is only as trustworthy as the sign-in that set it up, as with any method a
user enrols on their own.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.email_otp import CODE, USERS_CHOOSE_ADDRESS, users_choose_address
from twofa.services import audit
from twofa.services.factor_access import options_key
from twofa.services.settings_cache import SettingsCache
from twofa.storage.repositories import ConsoleSettings
from twofa.storage.tables import ConsoleSettingRow

SETTING_KEY: Final = options_key(CODE)
AUDIT_KIND: Final = "settings_email_codes"


class EmailCodeOptionsService:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Clock, cache: SettingsCache
    ) -> None:
        """`cache`: the gateway's console settings cache, told at once of a save."""
        self._db = db
        self._clock = clock
        self._cache = cache

    async def users_choose_address(self) -> bool:
        async with self._db.begin() as db:
            row = await ConsoleSettings(db).get(SETTING_KEY)
        return users_choose_address(_value(row))

    async def set_users_choose_address(self, on: bool, actor: str, client: ClientInfo) -> bool:
        """Saves the choice (audited with before and after); True when it changed. Other
        options of the method, should it gain some, are kept."""
        async with self._db.begin() as db:
            row = await db.get(ConsoleSettingRow, SETTING_KEY, with_for_update=True)
            before = _value(row)
            if users_choose_address(before) == on:
                return False
            after = {**before, USERS_CHOOSE_ADDRESS: on}
            await ConsoleSettings(db).upsert(SETTING_KEY, after, self._clock.now(), actor)
            audit.record(
                db,
                self._clock,
                AUDIT_KIND,
                "saved",
                username=actor,
                client=client,
                before=before,
                after=after,
            )
        self._cache.invalidate()
        return True


def _value(row: ConsoleSettingRow | None) -> dict[str, Any]:
    return dict(row.value) if row is not None else {}

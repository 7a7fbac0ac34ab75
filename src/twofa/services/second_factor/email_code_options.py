"""Who picks the address codes by e-mail go to: the account (its directory or console address,
the default) or the user at set-up, proving it with a first code. The method option
`method.email_otp`, edited from the console's E-mail Settings and `twofa smtp addresses`.

Letting users choose serves accounts without an address and people who want codes at a
mailbox they can still read when the work one is what they are locked out of; the price is
that an address is only as trustworthy as the sign-in that set it up, as with any method a
user enrols on their own.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.email_otp import CODE, USERS_CHOOSE_ADDRESS, users_choose_address
from twofa.services.second_factor.method_options import MethodOptions, Options
from twofa.services.settings.cache import SettingsCache

AUDIT_KIND: Final = "settings_email_codes"


class EmailCodeOptionsService:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Clock, cache: SettingsCache
    ) -> None:
        """`cache`: the gateway's console settings cache, told at once of a save."""
        self._options = MethodOptions(db, clock, cache, CODE, AUDIT_KIND)

    async def users_choose_address(self) -> bool:
        options, _ = await self._options.read()
        return users_choose_address(options)

    async def set_users_choose_address(self, on: bool, actor: str, client: ClientInfo) -> bool:
        """Saves the choice (audited with before and after); True when it changed. Other
        options of the method, should it gain some, are kept."""

        def switched(options: Options) -> Options | None:
            if users_choose_address(options) == on:
                return None
            return {**options, USERS_CHOOSE_ADDRESS: on}

        _, changed = await self._options.edit(switched, actor, client)
        return changed

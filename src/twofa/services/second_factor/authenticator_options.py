"""The name authenticator apps show above a user's codes (the `issuer` of the TOTP key), the
method option `method.totp`, edited from the console's Authenticator app page and
`twofa settings authenticator-app`. It applies to keys set up from then on: a key already in
an app keeps the name it was added with, as apps never learn of a change.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.totp import CODE, ISSUER_OPTION, issuer_from_options, issuer_problem
from twofa.services.second_factor.method_options import MethodOptions, Options
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.console import SettingsRejected

AUDIT_KIND: Final = "settings_authenticator_app"


class AuthenticatorOptionsService:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Clock, cache: SettingsCache
    ) -> None:
        """`cache`: the gateway's console settings cache, told at once of a save."""
        self._options = MethodOptions(db, clock, cache, CODE, AUDIT_KIND)

    async def issuer(self) -> str:
        options, _ = await self._options.read()
        return issuer_from_options(options)

    async def set_issuer(self, typed: str, actor: str, client: ClientInfo) -> tuple[str, bool]:
        """The name in force afterwards and whether it changed; `SettingsRejected` names
        what is wrong with a name, and nothing is saved."""
        issuer = typed.strip()
        if (problem := issuer_problem(issuer)) is not None:
            raise SettingsRejected({"issuer": problem})

        def renamed(options: Options) -> Options | None:
            if issuer_from_options(options) == issuer:
                return None
            return {**options, ISSUER_OPTION: issuer}

        options, changed = await self._options.edit(renamed, actor, client)
        return issuer_from_options(options), changed

"""Who may use the console: an enabled account with the admin role. Anyone else is refused and
the attempt is audited with the path, so a user probing the console leaves a trace. Also the
signed-in account as the portal's pages show it (its name, and whether to link the console).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.state import audit
from twofa.storage.repositories import Users


@dataclass(frozen=True)
class SignedInAccount:
    username: str
    display_name: str  # the username when the account has no display name
    is_admin: bool


class ConsoleAccessService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = sessions
        self._clock = clock

    async def admin_name(self, user_id: int, client: ClientInfo, path: str) -> str | None:
        """The username of an enabled admin; None for anyone else, once the attempt on `path`
        is audited."""
        async with self._db.begin() as db:
            user = await Users(db).by_id(user_id)
            if user is not None and user.is_admin and user.enabled:
                return user.username
            audit.record(
                db,
                self._clock,
                "admin_denied",
                "forbidden",
                username=user.username if user else "",
                client=client,
                path=path,
            )
        return None

    async def signed_in_account(self, user_id: int) -> SignedInAccount | None:
        async with self._db.begin() as db:
            user = await Users(db).by_id(user_id)
        if user is None:
            return None
        return SignedInAccount(user.username, user.display_name or user.username, user.is_admin)

"""Users and groups kept in twofa's own database, with argon2id password hashes. A sign-in
reads the stored hash (`stored`), checks the password in the hashing pool outside any database
transaction (`check`: argon2 takes a tenth of a second on purpose, and no connection or lock
waits for it), then confirms in the sign-in's transaction that the account is as it was read
(`settle`). A hash made with other argon2 parameters than the configured ones is replaced there,
the one moment the password is known."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.security.hashing_pool import HashingPool
from twofa.storage.repositories import Users
from twofa.storage.tables import UserRow


@dataclass(frozen=True)
class StoredPassword:
    """What a sign-in read of the account: the check runs against this, later."""

    user_id: int | None  # None: no such user (the check still costs the same)
    password_hash: str | None
    enabled: bool

    @classmethod
    def of(cls, user: UserRow | None) -> StoredPassword:
        if user is None:
            return cls(None, None, False)
        return cls(user.id, user.password_hash, user.enabled)


@dataclass(frozen=True)
class PasswordCheck:
    right: bool
    new_hash: str | None = None  # the password at the configured cost, when it was another


class LocalDirectory:
    name = "local"

    def __init__(self, hashing: HashingPool) -> None:
        self._hashing = hashing

    async def check(self, stored: StoredPassword, password: str) -> PasswordCheck:
        """In the hashing pool, outside any transaction; raises `HashingBusy` when it is full.
        An unknown user is checked against a dummy hash, so it costs the same."""
        right = await self._hashing.verify(stored.password_hash, password)
        if not right or stored.password_hash is None:
            return PasswordCheck(False)
        if self._hashing.needs_rehash(stored.password_hash):
            return PasswordCheck(True, await self._hashing.hash(password))
        return PasswordCheck(True)

    async def settle(
        self, db: AsyncSession, stored: StoredPassword, checked: PasswordCheck
    ) -> UserRow | None:
        """The user, if the password was right and the account is still enabled with the
        hash that was checked (a password changed meanwhile wins: the sign-in is refused)."""
        if not checked.right or stored.user_id is None:
            return None
        # The row is held from here to the commit: a password change (or a disabled account)
        # committing meanwhile either came first, and is seen here, or waits for this
        # sign-in's session, and ends it.
        user = await Users(db).locked(stored.user_id)
        if user is None or not user.enabled or user.password_hash != stored.password_hash:
            return None
        if checked.new_hash is not None:
            user.password_hash = checked.new_hash
        return user

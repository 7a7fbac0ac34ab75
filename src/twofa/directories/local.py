"""Users and groups kept in twofa's own database, with argon2id password hashes, checked in
the hashing pool (never on the event loop). A hash made with other argon2 parameters than the
configured ones is replaced at a successful sign-in, the one moment the password is known."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.directories.base import Identity
from twofa.security.hashing_pool import HashingPool
from twofa.storage.repositories import Users


class LocalDirectory:
    name = "local"

    def __init__(self, hashing: HashingPool) -> None:
        self._hashing = hashing

    async def authenticate(self, db: AsyncSession, username: str, password: str) -> Identity | None:
        users = Users(db)
        user = await users.by_name(username)
        valid = await self._hashing.verify(user.password_hash if user else None, password)
        if user is None or not valid or not user.enabled:
            return None
        if user.password_hash and self._hashing.needs_rehash(user.password_hash):
            user.password_hash = await self._hashing.hash(password)
        groups = tuple(await users.group_names(user.id))
        return Identity(user.id, user.username, user.display_name, user.email, groups)

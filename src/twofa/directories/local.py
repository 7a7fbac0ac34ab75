"""Users and groups kept in twofa's own database, with argon2id password hashes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.directories.base import Identity
from twofa.security.passwords import hash_password, needs_rehash, verify_password
from twofa.storage.repositories import Users


class LocalDirectory:
    name = "local"

    async def authenticate(self, db: AsyncSession, username: str, password: str) -> Identity | None:
        users = Users(db)
        user = await users.by_name(username)
        valid = verify_password(user.password_hash if user else None, password)
        if user is None or not valid or not user.enabled:
            return None
        if user.password_hash and needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        groups = tuple(await users.group_names(user.id))
        return Identity(user.id, user.username, user.display_name, user.email, groups)

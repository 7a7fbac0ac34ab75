"""Where first-factor identities come from. The local directory is the first; LDAP and
Atlassian Crowd directories implement the same protocol later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]


class Directory(Protocol):
    name: str

    async def authenticate(self, db: AsyncSession, username: str, password: str) -> Identity | None:
        """The identity if the password is right and the account enabled, else None; a
        wrong password and an unknown user must cost the same time."""
        ...

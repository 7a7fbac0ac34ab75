"""Where first-factor identities come from. The local directory keeps users in twofa's own
database; external directories (LDAP / Active Directory, Atlassian Crowd REST) vouch for a
username and password and name the user's groups, and the login service provisions a local
user row for them on first sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twofa.errors import Unavailable


@dataclass(frozen=True)
class DirectoryUser:
    """A user an external directory vouches for. `username` is the directory's canonical
    spelling (what twofa stores), whatever case the person typed."""

    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]


class DirectoryUnavailable(Unavailable):
    """The directory could not be asked (down, timed out, refused our service account).
    Never turned into a yes or a no: the user is told the directory is unavailable."""


class ExternalDirectory(Protocol):
    """A directory outside twofa's database. It never writes to twofa's database: the
    login service provisions and refreshes the local user from what it returns."""

    name: str

    async def authenticate(self, username: str, password: str) -> DirectoryUser | None:
        """The user if the password is right and the account active, None if not; raises
        `DirectoryUnavailable` when it cannot tell."""
        ...

    async def groups_of(self, username: str) -> tuple[str, ...] | None:
        """The user's current groups (nested ones included), None if the user is unknown;
        raises `DirectoryUnavailable` when it cannot tell."""
        ...

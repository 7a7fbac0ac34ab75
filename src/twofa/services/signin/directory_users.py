"""Users that external directories vouch for: asked in order, provisioned as twofa users at
their first sign-in, their name, e-mail and groups refreshed at every sign-in (and groups
during a long session too, see `group_refresh`).

Group membership of a directory user follows the directory exactly (a group the admin
switched 2FA on for in User Management is matched by name), so leaving a group there ends
its 2FA requirement or access here at the next sign-in or group refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.directories.base import DirectoryUnavailable, DirectoryUser, ExternalDirectory
from twofa.errors import Conflict
from twofa.storage.repositories import Groups, Users
from twofa.storage.tables import GroupRow, UserRow


@dataclass(frozen=True)
class Vouched:
    directory: str
    user: DirectoryUser


class DirectoryConflict(Conflict):
    """The username belongs to another directory (or is a local account): never merged."""


async def ask_in_order(
    directories: Sequence[ExternalDirectory], username: str, password: str
) -> Vouched | None:
    """The first directory that knows the password wins; a directory that cannot be asked
    is skipped, but if none said yes and one could not be asked, the answer is "unavailable",
    never "wrong password"."""
    unavailable: DirectoryUnavailable | None = None
    for directory in directories:
        try:
            user = await directory.authenticate(username, password)
        except DirectoryUnavailable as exc:
            unavailable = exc
            continue
        if user is not None:
            return Vouched(directory.name, user)
    if unavailable is not None:
        raise unavailable
    return None


async def provision(db: AsyncSession, vouched: Vouched, now: datetime) -> UserRow:
    """Creates or refreshes the twofa user for a directory user, groups included."""
    users = Users(db)
    found = vouched.user
    user = await users.by_name(found.username)
    if user is None:
        user = UserRow(
            username=found.username,
            display_name=found.display_name,
            email=found.email,
            password_hash=None,
            created_at=now,
            directory=vouched.directory,
        )
        users.add(user)
        await db.flush()
    elif user.directory != vouched.directory:
        raise DirectoryConflict(
            f"{found.username!r} belongs to directory {user.directory!r}, not {vouched.directory!r}"
        )
    else:
        user.display_name, user.email = found.display_name, found.email
    await sync_groups(db, user, found.groups, now)
    return user


async def sync_groups(db: AsyncSession, user: UserRow, names: Sequence[str], now: datetime) -> None:
    """Makes the user's twofa groups exactly the directory's `names`, and notes when, so a
    session knows how old its groups are."""
    await _sync_groups(db, user, names)
    user.groups_synced_at = now


async def _sync_groups(db: AsyncSession, user: UserRow, names: Sequence[str]) -> None:
    groups = Groups(db)
    wanted = {name[:150] for name in names if name}
    current = set(await Users(db).group_names(user.id))
    for name in wanted - current:
        group = await groups.by_name(name)
        if group is None:
            group = GroupRow(name=name, twofa_enabled=False)
            groups.add(group)
            await db.flush()
        await groups.add_member(group.id, user.id)
    for name in current - wanted:
        group = await groups.by_name(name)
        if group is not None:
            await groups.remove_member(group.id, user.id)

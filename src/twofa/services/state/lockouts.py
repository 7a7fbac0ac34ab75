"""The throttle keys that can lock a user out (sign-in, Duo passcodes, each local method, and
their phone after a fraud report or at the daily cap), and when the latest active lock-out
ends. Login, the second-factor services and the admin's unlock all name the same keys through
here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.methods.registry import LOCAL_METHOD_CODES
from twofa.services.state import throttle
from twofa.storage.tables import ThrottleRow
from twofa.storage.throttles import Throttles

# Between a username and a client network in a sign-in key; never in a network's text
# (domain.sign_in_limits.client_network), so the last one ends the username.
NETWORK_SEPARATOR = "|"


def method_lockout_key(code: str, username: str) -> str:
    """Each local method counts its own failures, so a locked method leaves the others usable."""
    return f"2fa-{code}:{username.lower()}"


def push_pause_key(username: str) -> str:
    """Locked while pushes, calls and texts to the user's phone are paused after they reported
    one as fraud (services.duo.push_fatigue)."""
    return f"duo-push-paused:{username.lower()}"


def phone_minute_key(username: str) -> str:
    """Counts the pushes, calls and texts of the user's minute (not a lock-out an admin sees:
    it ends within the minute)."""
    return f"duo-phone-minute:{username.lower()}"


def phone_day_key(username: str) -> str:
    """Counts the pushes, calls and texts of the user's day; locked once at the daily cap."""
    return f"duo-phone-day:{username.lower()}"


def lockout_keys(username: str) -> tuple[str, ...]:
    """The throttle keys that can lock this user out (see services.signin.login,
    services.duo.push, services.second_factor.pipeline), or out of their phone
    (services.duo.push_fatigue): the admin's Unlock clears them all, so it also lifts a push
    pause or the daily cap early."""
    methods = tuple(method_lockout_key(code, username) for code in LOCAL_METHOD_CODES)
    return (
        f"login-user:{username.lower()}",
        f"duo-passcode:{username}",
        *methods,
        push_pause_key(username),
        phone_day_key(username),
    )


async def lockout_ends(db: AsyncSession, username: str, now: datetime) -> datetime | None:
    """When the latest of the user's active lock-outs ends, or None when none is active."""
    ends = [await throttle.locked_until(db, key, now) for key in lockout_keys(username)]
    return max((end for end in ends if end is not None), default=None)


def sign_in_network_key(username: str, network: str) -> str:
    """Counts the user's wrong passwords from one client network (an IPv4 address, an IPv6
    /64): at the limit the name is locked from there, and only there, so an outsider cannot
    lock its owner out of their own network."""
    return f"login-user-net:{username.lower()}{NETWORK_SEPARATOR}{network}"


def sign_in_all_networks_key(username: str) -> str:
    """Counts the user's wrong passwords from every network together. Past its limit (only a
    distributed attack gets there) each attempt is slowed, never refused: not a lock-out, so
    the admin's Unlock leaves it and the console does not show the user as locked."""
    return f"login-user-all:{username.lower()}"


async def _network_rows(db: AsyncSession, username: str) -> list[ThrottleRow]:
    prefix = sign_in_network_key(username, "")
    rows = await Throttles(db).starting_with(prefix)
    # `alice|x` is another user: a network never holds the separator.
    return [row for row in rows if NETWORK_SEPARATOR not in row.key[len(prefix) :]]


async def network_lockout_ends(db: AsyncSession, username: str, now: datetime) -> datetime | None:
    """When the latest of the user's sign-in lock-outs from single networks ends, or None."""
    ends = [row.locked_until for row in await _network_rows(db, username)]
    return max((end for end in ends if end is not None and end > now), default=None)


async def any_lockout_ends(db: AsyncSession, username: str, now: datetime) -> datetime | None:
    """When the latest of every active lock-out of the user ends (those of `lockout_keys` and
    those from single networks): what the console shows as "locked until"."""
    ends = (await lockout_ends(db, username, now), await network_lockout_ends(db, username, now))
    return max((end for end in ends if end is not None), default=None)


async def clear_network_lockouts(db: AsyncSession, username: str, now: datetime) -> bool:
    """The admin's Unlock for sign-ins from single networks: removes the user's counters of
    every network; True if one of them was locked."""
    rows = await _network_rows(db, username)
    was_locked = any(row.locked_until is not None and row.locked_until > now for row in rows)
    for row in rows:
        await throttle.reset(db, row.key)
    return was_locked

"""The throttle keys that can lock a user out (sign-in, Duo passcodes, each local method, and
their phone after a fraud report or at the daily cap), and when the latest active lock-out
ends. Login, the second-factor services and the admin's unlock all name the same keys through
here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.methods.registry import LOCAL_METHOD_CODES
from twofa.services.state import throttle


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

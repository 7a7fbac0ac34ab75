"""The root of twofa's own error tree and its categories. Each layer raises its own classes,
each under exactly one category (its most specific one, below); the pages and the API answer
a category from one table each (the CLI has one exit code for all), so no edge ever reads an
error's message to decide what went wrong.

    TwofaError
    ├── NotFound            the thing named does not exist
    ├── Conflict            it clashes with what exists, or with a change made meanwhile
    ├── Invalid             the input breaks a rule; `fields` says which field and why
    ├── Refused             understood, and twofa will not do it
    │   ├── Forbidden       ... not for whoever is asking
    │   └── Unavailable     ... not now: something it needs is down, missing or not set up
    └── SessionExpired      the sign-in it needs is gone: sign in again

Forbidden and Unavailable are kinds of refusal so that an area's family of refusals
(`SecondFactorError`) can hold a member that is unavailable (`DuoDown`) and still be caught
whole. A family whose members fall in unrelated categories (`AccountError`: unknown, taken,
invalid) has no category of its own and is never raised itself: each member names its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final


class TwofaError(Exception):
    """Base of every error twofa raises on purpose. `str(exc)` is written for an admin and the
    log; what an end user's page says comes from `user_message` or the category."""

    @property
    def user_message(self) -> str | None:
        """Words written for end users, shown as they are; None for a message meant for an
        admin or the log (it may name servers or ids), where a page says its category's plain
        message instead."""
        return None

    @property
    def fields(self) -> Mapping[str, str]:
        """What is wrong with each field of the request, so a form or an API client can point
        at it; empty when the error is not about fields."""
        return {}


class NotFound(TwofaError):
    """The user, group, rule, token or method named does not exist (or no longer does)."""


class Conflict(TwofaError):
    """The request clashes with what is stored: a name is taken, or someone else changed the
    same things at the same time."""


class Invalid(TwofaError):
    """The input breaks a rule the caller can fix by changing it."""

    def __init__(self, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self._fields = dict(fields or {})

    @property
    def fields(self) -> Mapping[str, str]:
        return self._fields


class Refused(TwofaError):
    """The request is understood and well-formed, and twofa will not do it: a wrong or expired
    second factor, a setting that fails its checks, a rule that says no."""


class Forbidden(Refused):
    """Refused because of who is asking (not an admin), whatever they ask."""


class Unavailable(Refused):
    """Refused for now and through no fault of the caller: a service twofa needs (Duo, the
    mail or directory server, the database) is down, or twofa itself is not set up for it.
    Waiting, another method or an admin fixes it."""


class SessionExpired(TwofaError):
    """The sign-in the request needs is gone (expired, signed out) or was never made."""

    default_message: Final = "Your sign-in has expired. Please sign in again."

    def __init__(self, message: str = default_message) -> None:
        super().__init__(message)


CATEGORIES: Final = (NotFound, Conflict, Invalid, Refused, Forbidden, Unavailable, SessionExpired)


def category_of(error: TwofaError) -> type[TwofaError] | None:
    """The most specific category `error` is under (a sub-category comes before its parent in
    every MRO); None only for a family base raised by mistake."""
    return next((cls for cls in type(error).__mro__ if cls in CATEGORIES), None)


class ConfigurationError(Unavailable):
    """Settings are missing or invalid; the message lists every problem found. Unavailable,
    not Invalid: whoever meets it (a user signing in, a command) cannot fix it by changing
    their own request."""

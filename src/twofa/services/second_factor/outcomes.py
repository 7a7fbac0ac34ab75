"""How a second-factor step ends for its caller: a signed-in session that replaces the pending
one, or a refusal carrying the message the user is told (with Duo's two failmode refusals).
Every method's service and the web layer share these, not only Duo Push."""

from __future__ import annotations

from dataclasses import dataclass

from twofa.errors import Refused, Unavailable
from twofa.services.state.sessions import SessionView


class SecondFactorError(Refused):
    """A second-factor step refused; `message` is what the user is told. The family every
    second-factor page catches whole: a member that is `Unavailable` too is a refusal all the
    same (the user cannot sign in with this method now)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    @property
    def user_message(self) -> str:
        return self.message

    @property
    def other_methods_may_work(self) -> bool:
        """Whether the page offers the user's other methods: a method that cannot work right
        now (its service down, its pushes paused) must not strand the user."""
        return isinstance(self, Unavailable)


class DuoDown(Unavailable, SecondFactorError):
    """Duo could not be asked and failmode is secure."""


class DuoRefused(Unavailable, SecondFactorError):
    """Duo answered but refused twofa itself (a wrong key or clock: 401; too many requests:
    429). Never a reason to fail open: the sign-in is refused and the admin is told."""


class FailOpen(SecondFactorError):
    """Duo could not be asked and failmode is safe: sign in on the password alone."""


@dataclass(frozen=True)
class Completion:
    """A signed-in session replacing the pending one: set `token` as the new cookie.
    `enrolled_now` marks the sign-in that finished Duo Push set-up (the backup-method step
    hooks in there)."""

    token: str
    session: SessionView
    enrolled_now: bool = False

    @property
    def passed_second_factor(self) -> bool:
        """A second factor stands behind this session (not a postponement or a fail-open):
        only such a sign-in may remember the device."""
        return self.session.second_factor_at is not None

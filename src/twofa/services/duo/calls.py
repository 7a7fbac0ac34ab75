"""What Duo's failures mean for a sign-in, decided in one place. Duo unreachable (a transport
error, a timeout, a 5xx) is failmode: `secure` refuses, `safe` fails open where the gate allows
it. Duo refusing twofa itself (401: a wrong key or a clock off; 429: rate limited) is Duo
answering, never a reason to fail open. Duo refusing one request (a 400 about this user or
device) is a plain message. Every such decision is audited.

Every call is timed and its failures counted by Duo endpoint (twofa.telemetry) here, where
each sign-in's Duo calls pass: `duo/` is a standalone client that knows nothing of metrics."""

from __future__ import annotations

from collections.abc import Awaitable
from time import perf_counter
from typing import Any, Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import DuoSettings, FailMode
from twofa.domain.client import ClientInfo
from twofa.duo import DuoApiError, DuoError, DuoRateLimited, DuoUnavailable
from twofa.duo.errors import (
    DuoMalformedResponse,
    DuoServerError,
    DuoTimeout,
    DuoTransportError,
)
from twofa.services.duo.rules import duo_refused_message, refusal_message
from twofa.services.second_factor.outcomes import (
    DuoDown,
    DuoRefused,
    FailOpen,
    SecondFactorError,
)
from twofa.services.state import audit
from twofa.storage.tables import UserRow
from twofa.telemetry import DUO_API_ERRORS, DUO_API_SECONDS

T = TypeVar("T")
DUO_DOWN = (
    "Duo Security cannot be reached, so sign-in is refused for now "
    "(failmode: secure). Try again in a few minutes or contact your administrator."
)
# The Duo Auth API endpoint behind each operation of the Duo Push method (methods.duo_push)
# that a sign-in awaits through `DuoCalls.ask`: a fixed list, so the label stays bounded.
DUO_ENDPOINTS: Final = {
    "preauth": "preauth",
    "begin_enrollment": "enroll",
    "enrollment_status": "enroll_status",
    "start": "auth",
    "start_call": "auth",
    "send_sms_passcodes": "auth",
    "verify_passcode": "auth",
    "poll": "auth_status",
}
# Most specific first: DuoRateLimited and DuoServerError are DuoApiErrors too.
_ERROR_KINDS: Final[tuple[tuple[type[DuoError], str], ...]] = (
    (DuoRateLimited, "rate_limited"),
    (DuoServerError, "server_error"),
    (DuoTimeout, "timeout"),
    (DuoTransportError, "transport"),
    (DuoMalformedResponse, "malformed"),
    (DuoApiError, "refused"),
)


def endpoint_of(call: Awaitable[Any]) -> str:
    """The Duo endpoint a method operation's coroutine calls, by the operation's name."""
    code = getattr(call, "cr_code", None)
    return DUO_ENDPOINTS.get(code.co_name if code is not None else "", "other")


def error_kind(error: DuoError) -> str:
    if isinstance(error, DuoApiError) and error.is_bad_credentials:
        return "unauthorized"  # a wrong key, secret or clock: the admin must act
    return next((kind for cls, kind in _ERROR_KINDS if isinstance(error, cls)), "other")


class DuoCalls:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Clock, settings: DuoSettings
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings

    async def ask(self, call: Awaitable[T], user: UserRow, client: ClientInfo) -> T:
        """Awaits a Duo call for `user`; raises `DuoRefused`, `SecondFactorError`, `FailOpen`
        (failmode safe: the caller asks the gate whether this user may be let in) or
        `DuoDown` (failmode secure)."""
        endpoint, started = endpoint_of(call), perf_counter()
        try:
            answer = await call
        except DuoError as exc:
            DUO_API_SECONDS.labels(endpoint).observe(perf_counter() - started)
            DUO_API_ERRORS.labels(endpoint, error_kind(exc)).inc()
            await self._decide(exc, user, client)
            raise  # a DuoError no rule covers goes on as it came
        DUO_API_SECONDS.labels(endpoint).observe(perf_counter() - started)
        return answer

    async def _decide(self, exc: DuoError, user: UserRow, client: ClientInfo) -> None:
        """Raises what a Duo failure means for the sign-in (see `ask`)."""
        if isinstance(exc, (DuoUnavailable, DuoApiError)):
            if isinstance(exc, DuoRateLimited) or (
                isinstance(exc, DuoApiError) and exc.is_bad_credentials
            ):  # Duo answered: a wrong key, a clock off, or too many requests. Never fail open.
                await self._audit_duo_error(user, client, exc)
                raise DuoRefused(duo_refused_message(exc)) from exc
            if isinstance(exc, DuoApiError) and not isinstance(exc, DuoUnavailable):
                await self._audit_duo_error(user, client, exc)
                raise SecondFactorError(refusal_message(exc)) from exc
            await self._audit_failmode(user, client, exc)
            if self._settings.failmode is FailMode.SAFE:
                raise FailOpen(str(exc)) from exc
            raise DuoDown(DUO_DOWN) from exc

    async def _audit_failmode(self, user: UserRow, client: ClientInfo, exc: DuoError) -> None:
        error = f"{type(exc).__name__}: {exc}"
        await self.audit_event(user, client, "failmode", self._settings.failmode.value, error=error)

    async def _audit_duo_error(self, user: UserRow, client: ClientInfo, exc: DuoApiError) -> None:
        await self.audit_event(user, client, "duo_error", str(exc.code), error=str(exc))

    async def audit_event(
        self, user: UserRow, client: ClientInfo, kind: str, outcome: str, **detail: Any
    ) -> None:
        """Audits in a transaction of its own (for decisions that change nothing else)."""
        async with self._db.begin() as db:
            audit.record(
                db, self._clock, kind, outcome, username=user.username, client=client, **detail
            )

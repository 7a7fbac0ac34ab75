"""OpenID Connect Back-Channel Logout 1.0 (the OP's side): when a twofa session ends, however
it ends, each application with a back-channel logout URI that the session signed in to is
sent a signed logout token naming the user (`sub`) and the session (`sid`), so it ends its
own session too.

The grants themselves are ended in the very transaction that ends the session
(storage.oidc_refresh_tokens.end_grants_with_sessions); telling the applications is a
courtesy on top, made after the commit in the background, so a slow or absent relying party
never holds up a sign-out: each delivery has a timeout and a few retries, and its outcome is
audited and, when it fails, logged loudly. Only the process whose commit ended the session
sends (the hook listens to its own commits, not to the change feed)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import httpx
from joserfc import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.services.idp.claims import logout_claims, session_sid
from twofa.services.idp.signing_keys import SIGNING_ALGORITHM, SigningKeyService
from twofa.services.state import audit
from twofa.storage.applications import Applications
from twofa.storage.oidc_refresh_tokens import EndedSignIn

log = logging.getLogger(__name__)

LOGOUT_TOKEN_LIFETIME: Final = timedelta(minutes=2)
LOGOUT_TOKEN_TYPE: Final = "logout+jwt"  # noqa: S105 (§2.4's explicit typing, no secret)
TIMEOUT_S: Final = 5.0
RETRY_DELAYS_S: Final = (1.0, 4.0)  # three attempts in all


@dataclass(frozen=True)
class LogoutNotice:
    """One logout token to send: to which application, for which user and session."""

    application: str
    client_id: str
    uri: str
    username: str
    subject: str
    sid: str


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    status: int | None = None  # the last answer's HTTP status; None: none came
    error: str = ""


class BackchannelLogout:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        keys: SigningKeyService,
        issuer: str,
        http: httpx.AsyncClient,
        *,
        timeout_s: float = TIMEOUT_S,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keys = keys
        self._issuer = issuer.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self._retry_delays_s = tuple(retry_delays_s)
        self._pending: set[asyncio.Task[None]] = set()

    def sessions_ended(self, ended: Sequence[EndedSignIn]) -> None:
        """Called right after the commit that ended the sessions (in the event loop's thread,
        so it only schedules): tells their applications in the background."""
        try:
            task = asyncio.get_running_loop().create_task(self.tell(ended))
        except RuntimeError:  # no loop: cannot happen after an async commit, but never lose it
            log.error("back-channel logout NOT SENT for %d sign-ins: no event loop", len(ended))
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def tell(self, ended: Sequence[EndedSignIn]) -> None:
        """Sends every logout token `ended` calls for, at once; never raises."""
        try:
            notices = await self.notices(ended)
            await asyncio.gather(*(self._send_and_audit(notice) for notice in notices))
        except Exception:  # a background task: its failure must be seen, not swallowed
            log.exception("back-channel logout FAILED for %d ended sign-ins", len(ended))

    async def notices(self, ended: Sequence[EndedSignIn]) -> list[LogoutNotice]:
        """The logout tokens to send: one per session and application that has a back-channel
        logout URI (the others are not told)."""
        if not ended:
            return []
        notices = []
        async with self._db() as db:
            told = {row.id: row for row in await Applications(db).all()}
            for sign_in in ended:
                app = told.get(sign_in.application_id)
                if app is None or app.backchannel_logout_uri is None:
                    continue
                if sign_in.subject is None:
                    continue  # no application ever knew the user by a subject
                notices.append(
                    LogoutNotice(
                        app.name,
                        app.client_id,
                        app.backchannel_logout_uri,
                        sign_in.username,
                        sign_in.subject,
                        session_sid(sign_in.session_id),
                    )
                )
        return notices

    async def logout_token(self, notice: LogoutNotice) -> str:
        """A logout token for `notice`, signed by the key that signs ID tokens."""
        claims = logout_claims(
            issuer=self._issuer,
            client_id=notice.client_id,
            subject=notice.subject,
            sid=notice.sid,
            jti=secrets.token_hex(16),
            now=int(self._clock.now().timestamp()),
            lifetime_s=int(LOGOUT_TOKEN_LIFETIME.total_seconds()),
        )
        key = await self._keys.signing_key()
        header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": LOGOUT_TOKEN_TYPE}
        return jwt.encode(header, claims, key)

    async def _send_and_audit(self, notice: LogoutNotice) -> None:
        delivery = await self.send(notice)
        if not delivery.delivered:
            log.error(
                "back-channel logout FAILED: %s (%s) was not told that %s's session ended "
                "after %d attempts: %s",
                notice.application, notice.uri, notice.username, delivery.attempts,
                delivery.error,
            )  # fmt: skip
        async with self._db.begin() as db:
            audit.record(
                db, self._clock, "oidc_backchannel_logout",
                "sent" if delivery.delivered else "failed",
                username=notice.username, application=notice.application,
                attempts=delivery.attempts, status=delivery.status, error=delivery.error,
            )  # fmt: skip

    async def send(self, notice: LogoutNotice) -> Delivery:
        """POSTs a fresh logout token (a new `jti` each attempt: a relying party refuses a
        jti it has seen) until one is taken (2xx), the answer says it never will be (4xx:
        Back-Channel Logout §2.8), or the attempts run out."""
        attempts, status, error = 0, None, ""
        for delay in (0.0, *self._retry_delays_s):
            await asyncio.sleep(delay)
            attempts += 1
            try:
                answer = await self._http.post(
                    notice.uri,
                    data={"logout_token": await self.logout_token(notice)},
                    timeout=self._timeout_s,
                )
            except httpx.HTTPError as failed:
                status, error = None, f"{type(failed).__name__}: {failed}"
                continue
            status = answer.status_code
            if answer.is_success:
                return Delivery(True, attempts, status)
            error = f"HTTP {status}: {answer.text[:200]}"
            if 400 <= status < 500:
                break
        return Delivery(False, attempts, status, error)

    async def drain(self, timeout_s: float = 15.0) -> None:
        """Waits for the deliveries under way (a CLI command's loop ends right after it),
        at most `timeout_s`; what is still running then is cancelled, and logged."""
        if not self._pending:
            return
        _, running = await asyncio.wait(set(self._pending), timeout=timeout_s)
        for task in running:
            task.cancel()
        if running:
            log.error("back-channel logout: %d deliveries cancelled at shutdown", len(running))

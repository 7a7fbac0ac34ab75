"""The express lane: the authenticator-app (TOTP) page and its answer on PostgreSQL in three
statements (storage.express), for the sign-ins and step-ups that go as expected.

It is an optimisation of `FactorService.start` and `.verify`, never a second set of rules:
it answers only what it can answer exactly as they would (same checks, same rows written,
same audit record), and returns None for everything else, which the caller then hands to
`FactorService`: a wrong code, a lock-out, an expired or used challenge, a racing sign-in, a
session that is not live. Those paths audit refusals; this one never has to. It counts, then
checks, as they do: a code is checked only under an attempt counted first and below the
method's limit (the last allowed attempt is given back unchecked and left to the general
path, which audits the lock-out when it fails). A wrong code the lane checked is counted
again when the general path answers it, so through the lane it costs two attempts: never
more checks than the limit, at worst a lock-out sooner. Off by default (`express_lane`).
The method still computes (`TotpMethod.verify`); this service persists what it returns.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.base import MethodContext, MethodUser, ResponseRejected, StoredCredential
from twofa.methods.registry import MethodRegistry
from twofa.security.sealing import Sealer, SealError
from twofa.security.tokens import new_token, same_token, token_digest
from twofa.services import audit, credential_store
from twofa.services.challenge_book import ChallengeBook
from twofa.services.factor_access import FactorAccess
from twofa.services.factor_failures import failure_rule
from twofa.services.lockouts import method_lockout_key
from twofa.services.second_factor_outcomes import SecondFactorError
from twofa.services.sessions import Level, SessionService
from twofa.storage.change_notes import Changes
from twofa.storage.express import (
    AnswerContext,
    AnswerWrite,
    ExpressStore,
    ExpressUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPRESS_METHODS: Final = frozenset({"totp"})  # one credential, no items, nothing delivered
VERIFYING: Final = (Level.PASSWORD, Level.SIGNED_IN)
KEPT_PAGES: Final = 10_000  # open pages whose context this process keeps (~1 KB each)


@dataclass
class ExpressCounts:
    """What this process's lane did: pages opened, answers that signed in, and requests it
    handed to the general path (for tests and, later, metrics)."""

    pages: int = 0
    sign_ins: int = 0
    handed_on: int = 0


@dataclass(frozen=True)
class _Kept:
    """What opening a page read, kept for its answer: when the answer comes back to this
    process (a browser keeps its connection, and each worker its own connections), the
    write alone checks that nothing changed since (it is gated as the read is)."""

    session_id: str
    code: str
    context: AnswerContext
    expires_at: datetime


@dataclass(frozen=True)
class ExpressPage:
    """An opened challenge: what the verify page shows (the lane's methods show nothing
    of their own on it)."""

    challenge_id: str
    csrf_token: str
    step_up: bool  # a signed-in user confirming a change, not a sign-in


class ExpressLane:
    def __init__(
        self,
        store: ExpressStore,
        registry: MethodRegistry,
        access: FactorAccess,
        sessions: SessionService,
        challenges: ChallengeBook,
        sealer: Sealer,
        clock: Clock,
        announce: Callable[[Changes], None] | None = None,
    ) -> None:
        """`announce`: tells other processes of what this lane committed outside the ORM (the
        session it replaced), as `storage.change_notes` does for the general path."""
        self._store = store
        self._announce = announce
        self._registry = registry
        self._access = access
        self._sessions = sessions
        self._challenges = challenges
        self._sealer = sealer
        self._clock = clock
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.counts = ExpressCounts()

    async def close(self) -> None:
        await self._store.close()

    def serves(self, code: str) -> bool:
        return code in EXPRESS_METHODS and code in self._registry.codes

    async def open(self, token: str | None, code: str) -> ExpressPage | None:
        """Opens a challenge for this browser's session, or None: ask `FactorService.start`."""
        page = await _stepping_aside(self._open(token, code))
        if page is None:
            self.counts.handed_on += 1
        else:
            self.counts.pages += 1
        return page

    async def answer(
        self,
        token: str | None,
        code: str,
        challenge_id: str,
        csrf_given: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> str | None:
        """The new session's cookie value when the answer signs the user in (or confirms a
        change), or None: ask `FactorService.verify`, which says why not and counts it."""
        attempt = self._answer(token, code, challenge_id, csrf_given, response, client)
        signed_in = await _stepping_aside(attempt)
        if signed_in is None:
            self.counts.handed_on += 1
        else:
            self.counts.sign_ins += 1
        return signed_in

    async def _open(self, token: str | None, code: str) -> ExpressPage | None:
        if not token or len(token) > 100 or not await self._allowed(code):
            return None
        method = self._registry.get(code)
        window = self._sessions.live_window(VERIFYING)
        await self._challenges.sweep_if_due()
        challenge_id = new_token()
        payload = json.dumps({"keep": {}, "show": self._challenges.seal_show({})})
        session_id = token_digest(token)
        expires_at = window.now + timedelta(seconds=method.challenge_seconds)
        opened = await self._store.open_challenge(
            session_id,
            window,
            challenge_id,
            code,
            method_lockout_key(code, ""),
            expires_at,
            payload,
        )
        if len(opened) != 1 or not self._same_lock_key(code, opened[0]):
            return None  # (none opened, or one the general path will find and refuse)
        self._keep(challenge_id, _Kept(session_id, code, opened[0], expires_at))
        step_up = opened[0].level == Level.SIGNED_IN
        return ExpressPage(challenge_id, opened[0].csrf_token, step_up)

    async def _answer(
        self,
        token: str | None,
        code: str,
        challenge_id: str,
        csrf_given: str,
        response: Mapping[str, str],
        client: ClientInfo,
    ) -> str | None:
        if not token or len(token) > 100 or not challenge_id or len(challenge_id) > 64:
            return None
        if not await self._allowed(code):
            return None
        session_id = token_digest(token)
        window = self._sessions.live_window(VERIFYING)
        kept = self._kept.pop(challenge_id, None)
        if (
            kept is not None
            and (kept.session_id, kept.code) == (session_id, code)
            and kept.expires_at > window.now
        ):
            found = kept.context  # this process opened the page: its context, as read then
        else:
            rows = await self._store.read_answer(
                session_id, challenge_id, window, code, method_lockout_key(code, "")
            )
            if len(rows) != 1 or not self._same_lock_key(code, rows[0]):
                return None
            found = rows[0]
        if not same_token(found.csrf_token, csrf_given):
            return None  # the pages' own check refuses it, as for any other form
        if not await self._counted(code, found.lock_key, window.now):
            return None
        state = await self._verified_state(code, found, response, window.now)
        if state is None:
            return None
        new_session = new_token()
        detail = {"method": code, "step_up": found.level == Level.SIGNED_IN}
        written = await self._store.write_answer(
            AnswerWrite(
                challenge_id=challenge_id,
                method=code,
                session_id=session_id,
                user_id=found.user_id,
                now=window.now,
                credential_id=found.credential_id,
                version_read=found.version,
                new_state=json.dumps(state),
                new_session_id=token_digest(new_session),
                new_csrf_token=new_token(),
                new_session_expires_at=self._sessions.signed_in_until(window.now),
                signed_in_level=int(Level.SIGNED_IN),
                client_ip=client.ip,
                user_agent=client.user_agent[:300],
                username=found.username,
                audit_detail=json.dumps(detail),
                lock_key=found.lock_key,
                levels=window.levels,
                idle_since=window.idle_since,
            )
        )
        if not written:
            return None
        audit.announce("second_factor", "allow", found.username, client, detail)
        if self._announce is not None:
            self._announce(Changes(ended_sessions=frozenset({session_id})))
        return new_session

    async def _counted(self, code: str, lock_key: str, now: datetime) -> bool:
        """Counts this answer against the method first (committed: the statement runs on its
        own); True when the lane may check it: below the limit. The attempt that reaches the
        limit is given back unchecked, so the general path takes it and audits the lock-out
        if it fails; one over the limit stays counted, as the general path leaves it."""
        rule = failure_rule(code)
        counted = await self._store.take_attempt(
            lock_key, rule.limit, rule.window, rule.lockout, now
        )
        if counted.failures == rule.limit:
            await self._store.give_back(lock_key, counted.window_started_at, rule.limit)
        return counted.failures < rule.limit

    def _keep(self, challenge_id: str, kept: _Kept) -> None:
        self._kept[challenge_id] = kept
        while len(self._kept) > KEPT_PAGES:
            self._kept.popitem(last=False)

    @staticmethod
    def _same_lock_key(code: str, found: AnswerContext) -> bool:
        """The statement's `lower()` of the name agrees with Python's (it may not for some
        non-ASCII names: then the general path, which counts in Python, answers)."""
        return found.lock_key == method_lockout_key(code, found.username)

    async def _allowed(self, code: str) -> bool:
        if not self.serves(code):
            return False
        try:
            await self._access.allowed_method(code)
        except SecondFactorError:
            return False
        return True

    async def _verified_state(
        self, code: str, found: AnswerContext, response: Mapping[str, str], now: datetime
    ) -> dict[str, Any] | None:
        """What the method computes for this answer: the credential's new state, or None."""
        method = self._registry.get(code)
        try:
            secret = (
                self._sealer.open(
                    found.secret_sealed, credential_store.secret_purpose(found.credential_id)
                )
                if found.secret_sealed
                else None
            )
        except SealError:
            return None
        credential = StoredCredential(
            found.credential_id, found.label, secret, json.loads(found.state), found.version
        )
        user = MethodUser(found.user_id, found.username, found.display_name, found.email)
        context = MethodContext(user, now, await self._access.options(code))
        try:
            verified = await method.verify(context, {}, [credential], response)
        except ResponseRejected:
            return None
        if verified.state is None or verified.use_item is not None:
            return None
        return dict(verified.state)


async def _stepping_aside(attempt: Awaitable[T]) -> T | None:
    """The attempt's result, or None when the lane's own database connection failed: the
    general path, with its own connections and error page, answers instead."""
    try:
        return await attempt
    except ExpressUnavailable as exc:
        log.warning("express lane: %s; the general path answers", exc)
        return None

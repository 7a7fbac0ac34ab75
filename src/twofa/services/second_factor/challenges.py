"""The server-owned challenges of the local methods: opened bound to one user, one browser
session, one method and a purpose (`enrol` or `validate`), answerable until they expire, and
what their page shows sealed while they wait (it can be a secret: a new TOTP key, fresh backup
codes). Old rows are swept; a used one forgets its payload (SecondFactorService does that in the
transaction that consumes it)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.clock import Clock
from twofa.methods.base import Method
from twofa.security.sealing import Sealer
from twofa.security.tokens import new_token
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state.sessions import SessionView
from twofa.storage.challenges import Challenges
from twofa.storage.tables import ChallengeRow, UserRow

SHOW_PURPOSE: Final = "challenge.show"
DRAFT_PURPOSE: Final = "challenge.draft"
SWEEP_EVERY: Final = timedelta(minutes=1)
KEEP_EXPIRED: Final = timedelta(hours=1)  # long past any rate-limit window that counts them
EXPIRED_MESSAGE: Final = "This request has expired or was already used. Start again."


@dataclass(frozen=True)
class OpenChallenge:
    id: str
    keep: Mapping[str, Any]
    show: Mapping[str, Any]


class OpenChallenges:
    """Every method works in the caller's transaction, so a page or an answer is one."""

    def __init__(self, clock: Clock, sealer: Sealer) -> None:
        self._clock = clock
        self._sealer = sealer
        self._swept_at: datetime | None = None

    def _due_for_sweep(self, now: datetime) -> bool:
        """Old challenges go at most once a minute per process."""
        if self._swept_at is None or now - self._swept_at >= SWEEP_EVERY:
            self._swept_at = now
            return True
        return False

    async def open(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        code: str,
        purpose: str,
        lifetime: timedelta,
        keep: Mapping[str, Any],
        show: Mapping[str, Any] | str,
        secret: str | None = None,
    ) -> str:
        """A new challenge, in the caller's transaction; `show` is the page's data, or already
        sealed (asked again). Returns its id."""
        now = self._clock.now()
        sealed_show = show if isinstance(show, str) else self.seal_show(show)
        payload: dict[str, Any] = {"keep": dict(keep), "show": sealed_show}
        if secret is not None:
            payload["secret"] = self._sealer.seal(secret, DRAFT_PURPOSE)
        challenge_id = new_token()
        if self._due_for_sweep(now):
            await Challenges(db).remove_expired(now - KEEP_EXPIRED)
        await Challenges(db).add(
            ChallengeRow(
                id=challenge_id,
                user_id=user.id,
                session_id=session.id,
                method=code,
                purpose=purpose,
                status="pending",
                created_at=now,
                expires_at=now + lifetime,
                payload=payload,
            )
        )
        return challenge_id

    async def answerable(
        self,
        db: AsyncSession,
        session: SessionView,
        user: UserRow,
        code: str,
        challenge_id: str,
        purpose: str,
    ) -> ChallengeRow:
        """The challenge if this session may answer it now, else `SecondFactorError`."""
        challenge = await Challenges(db).get(challenge_id) if challenge_id else None
        if (
            challenge is None
            or challenge.user_id != user.id
            or challenge.session_id != session.id
            or challenge.method != code
            or challenge.purpose != purpose
            or challenge.consumed_at is not None
            or challenge.expires_at <= self._clock.now()
        ):
            raise SecondFactorError(EXPIRED_MESSAGE)
        return challenge

    def described(self, row: ChallengeRow) -> OpenChallenge:
        payload = row.payload or {}
        return OpenChallenge(row.id, payload.get("keep", {}), self.open_show(payload.get("show")))

    def draft_secret(self, row: ChallengeRow) -> str | None:
        sealed = (row.payload or {}).get("secret")
        return self._sealer.open(str(sealed), DRAFT_PURPOSE) if sealed else None

    async def still_open(
        self, db: AsyncSession, session: SessionView, code: str
    ) -> OpenChallenge | None:
        """This browser's newest unanswered validation challenge for `code`."""
        row = await Challenges(db).latest_open(
            code, "validate", self._clock.now(), session_id=session.id
        )
        return self.described(row) if row is not None else None

    async def asked_of(
        self, db: AsyncSession, user: UserRow, code: str
    ) -> tuple[Mapping[str, Any], str] | None:
        """The user's newest unanswered validation challenge for `code` in any browser: its
        `keep` and its sealed page, to ask exactly the same again."""
        row = await Challenges(db).latest_open(code, "validate", self._clock.now(), user_id=user.id)
        if row is None or not row.payload or not row.payload.get("show"):
            return None
        return row.payload.get("keep", {}), str(row.payload["show"])

    async def refuse_during_cooldown(self, db: AsyncSession, user: UserRow, method: Method) -> None:
        """Methods that send something (an e-mail code) declare `resend_cooldown_seconds`: a
        new challenge that soon after the last one is refused, so nobody can flood a mailbox."""
        cooldown = int(getattr(method, "resend_cooldown_seconds", 0))
        if cooldown <= 0:
            return
        now = self._clock.now()
        last = await Challenges(db).latest_created(user.id, method.code)
        if last is not None and (wait := cooldown - (now - last).total_seconds()) > 0:
            raise SecondFactorError(
                f"Wait {math.ceil(wait)} seconds before asking for another code."
            )

    def seal_show(self, show: Mapping[str, Any]) -> str:
        return self._sealer.seal(json.dumps(dict(show)), SHOW_PURPOSE)

    def open_show(self, sealed: str | None) -> Mapping[str, Any]:
        shown: Mapping[str, Any] = (
            json.loads(self._sealer.open(sealed, SHOW_PURPOSE)) if sealed else {}
        )
        return shown

"""Remember this device: after a second factor, a browser may skip it for the number of days
the admin set (0 turns the feature off). The browser keeps a random token in a cookie; the
server keeps its SHA-256 with a label, the address, and when it was made and last used. A
user has at most `MAX_PER_USER` (the oldest goes first); users and admins can forget them;
a new password or a 2FA reset forgets them all (services.admin.accounts)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.security.tokens import new_token, token_digest
from twofa.services.second_factor.gate import FRESH_SECOND_FACTOR
from twofa.services.second_factor.outcomes import Completion
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.state import audit
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.credentials import RememberedDevices
from twofa.storage.repositories import Users
from twofa.storage.sessions import Sessions
from twofa.storage.tables import RememberedDeviceRow

MAX_PER_USER: Final = 10


@dataclass(frozen=True)
class RememberedDevice:
    id: str  # the token's digest: safe to show in a form, useless as a cookie
    label: str
    client_ip: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


def device_label(user_agent: str) -> str:
    """A short human label from the User-Agent: "Firefox on Linux"."""
    browsers = (("Edg/", "Edge"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"))
    browser = next((name for marker, name in browsers if marker in user_agent), None)
    if browser is None and "Safari/" in user_agent:
        browser = "Safari"
    systems = (
        ("Windows", "Windows"),
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("Mac OS", "macOS"),
        ("Linux", "Linux"),
    )
    system = next((name for marker, name in systems if marker in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


class RememberedDeviceService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        console: ConsoleSettingsService,
        sessions: SessionService,
        clock: Clock,
    ) -> None:
        self._db = db
        self._console = console
        self._sessions = sessions
        self._clock = clock

    async def days(self) -> int:
        return (await self._console.two_factor()).remember_device_days

    async def remember(self, signed_in: Completion, client: ClientInfo) -> tuple[str, int] | None:
        """A new device token and its lifetime in days for the sign-in that just completed,
        or None while the feature is off, or when no second factor stands behind the sign-in
        (a postponement, a Duo fail-open or bypass): a device stands for the factor passed."""
        days = await self.days()
        user_id = signed_in.session.user_id
        if days <= 0 or user_id is None or not signed_in.passed_second_factor:
            return None
        now = self._clock.now()
        token = new_token()
        async with self._db.begin() as db:
            devices = RememberedDevices(db)
            existing = await devices.of_user(user_id)
            for old in existing[: max(0, len(existing) - MAX_PER_USER + 1)]:
                await devices.remove(old.id)
            devices.add(
                RememberedDeviceRow(
                    id=token_digest(token),
                    user_id=user_id,
                    label=device_label(client.user_agent),
                    client_ip=client.ip,
                    created_at=now,
                    last_used_at=now,
                    expires_at=now + timedelta(days=days),
                )
            )
            await self._audit(db, user_id, client, "remembered")
        return token, days

    async def skip_second_factor(
        self, session: SessionView, token: str | None, client: ClientInfo
    ) -> Completion | None:
        """Signs in a password-only session from a remembered device of the same user; None
        when the token is missing, unknown, someone else's, expired or the feature is off."""
        if not token or len(token) > 100 or session.level is not Level.AWAITING_SECOND_FACTOR:
            return None
        if await self.days() <= 0:
            return None
        now = self._clock.now()
        async with self._db.begin() as db:
            row = await RememberedDevices(db).get(token_digest(token))
            if row is None or row.user_id != session.user_id or row.expires_at <= now:
                return None
            row.last_used_at = now
            row.client_ip = client.ip
            new_token_, view = await self._sessions.promote(
                db, session, row.user_id, Level.SIGNED_IN, client
            )
            # The device stands for the second factor passed when it was remembered: enough
            # for two-factor access rules and to open the console, never fresh enough for a
            # step-up (services.second_factor.gate), even just after it was remembered: a
            # stolen device cookie must not add a method or change a setting.
            passed_at = min(row.created_at, now - FRESH_SECOND_FACTOR - timedelta(seconds=1))
            stored = await Sessions(db).get(view.id)
            assert stored is not None
            stored.second_factor_at = passed_at
            view = replace(view, second_factor_at=passed_at)
            await self._audit(db, row.user_id, client, "recognised", device=row.label)
            return Completion(new_token_, view)

    async def of_user(self, user_id: int) -> list[RememberedDevice]:
        now = self._clock.now()
        async with self._db.begin() as db:
            rows = await RememberedDevices(db).of_user(user_id)
        return [
            RememberedDevice(r.id, r.label, r.client_ip, r.created_at, r.last_used_at, r.expires_at)
            for r in rows
            if r.expires_at > now
        ]

    async def forget(self, user_id: int, device_id: str, client: ClientInfo) -> bool:
        async with self._db.begin() as db:
            removed = await RememberedDevices(db).remove(device_id, user_id)
            if removed:
                await self._audit(db, user_id, client, "forgotten")
        return removed

    async def forget_all(self, user_id: int, client: ClientInfo, actor: str = "") -> int:
        async with self._db.begin() as db:
            count = await RememberedDevices(db).remove_of_user(user_id)
            await self._audit(db, user_id, client, "all_forgotten", count=count, actor=actor)
        return count

    async def _audit(
        self, db: AsyncSession, user_id: int, client: ClientInfo, outcome: str, **detail: object
    ) -> None:
        user = await Users(db).by_id(user_id)
        audit.record(
            db,
            self._clock,
            "remembered_device",
            outcome,
            username=user.username if user else "",
            client=client,
            **detail,
        )

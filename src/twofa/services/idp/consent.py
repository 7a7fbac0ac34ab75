"""Consent: what a user agreed an application not marked trusted (`skip_consent` False) may
learn about them, remembered per user and application until the user revokes it on My 2FA. A
grant covers the scopes it names; a request for more asks again. Grants and revocations are
audited."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.idp.claims import SCOPES
from twofa.services.state import audit
from twofa.storage.oidc_consents import OidcConsents

# What each scope hands the application, in the words the consent page and My 2FA use
# (services.idp.claims.user_claims is what they stand for).
SCOPE_WORDS: Final = {
    "openid": "your username",
    "profile": "your name",
    "email": "your e-mail address",
    "groups": "the groups you belong to",
}


def consent_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """The scopes a consent is about: the known ones asked for, in `SCOPES` order (an unknown
    scope hands nothing out, so there is nothing to agree to)."""
    asked = set(requested)
    return tuple(scope for scope in SCOPES if scope in asked)


def plain_words(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(SCOPE_WORDS[scope] for scope in consent_scopes(scopes))


@dataclass(frozen=True)
class Consent:
    """One application the user allowed, for My 2FA."""

    application_id: int
    application_name: str
    scopes: tuple[str, ...]
    granted_at: datetime

    @property
    def shares(self) -> tuple[str, ...]:
        return plain_words(self.scopes)


class ConsentService:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def has_consent(self, user_id: int, application_id: int, scopes: Sequence[str]) -> bool:
        """Whether the user's consent covers every known scope asked for."""
        async with self._db() as db:
            granted = await OidcConsents(db).scope_of(user_id, application_id)
        if granted is None:
            return False
        return set(consent_scopes(scopes)) <= set(granted.split())

    async def grant(
        self, user_id: int, application_id: int, scopes: Sequence[str], client: ClientInfo
    ) -> None:
        """Adds `scopes` to what the user agreed to share with the application: a narrower
        request later is still covered."""
        async with self._db.begin() as db:
            consents = OidcConsents(db)
            granted = (await consents.scope_of(user_id, application_id) or "").split()
            scope = " ".join(consent_scopes([*granted, *scopes]))
            await consents.put(user_id, application_id, scope, self._clock.now())
            user, application = await OidcConsents(db).names_of(user_id, application_id)
            audit.record(
                db, self._clock, "oidc_consent", "grant",
                username=user, client=client, application=application, scope=scope,
            )  # fmt: skip

    async def refuse(
        self, user_id: int, application_id: int, scopes: Sequence[str], client: ClientInfo
    ) -> None:
        """Audits a user's "Deny": nothing is remembered, the next request asks again."""
        async with self._db.begin() as db:
            user, application = await OidcConsents(db).names_of(user_id, application_id)
            scope = " ".join(consent_scopes(scopes))
            audit.record(
                db, self._clock, "oidc_consent", "deny",
                username=user, client=client, application=application, scope=scope,
            )  # fmt: skip

    async def revoke(self, user_id: int, application_id: int, client: ClientInfo) -> bool:
        """Forgets the consent: the next sign-in to the application asks again. Whether
        there was one (revoking twice is no error, and audited once)."""
        async with self._db.begin() as db:
            removed = await OidcConsents(db).remove(user_id, application_id)
            if removed:
                user, application = await OidcConsents(db).names_of(user_id, application_id)
                audit.record(
                    db, self._clock, "oidc_consent", "revoke",
                    username=user, client=client, application=application,
                )  # fmt: skip
        return removed

    async def of_user(self, user_id: int) -> list[Consent]:
        async with self._db() as db:
            listed = await OidcConsents(db).of_user(user_id)
        return [
            Consent(c.application_id, c.application_name, tuple(c.scope.split()), c.granted_at)
            for c in listed
        ]

"""Every place a sealed value is kept, with the purpose it was sealed for: the credentials'
secrets (TOTP seeds), the Duo secret key and the SMTP password inside their console settings,
the draft secret and page of each open challenge, and the signing keys of the OpenID Connect
provider and of the SAML identity provider. `twofa keys rotate` and `twofa keys
status` walk them through here; a new sealed value must be added here too (a unit test lists
every `seal(` in the code and fails until it is).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from twofa.domain.smtp_settings import PASSWORD_PURPOSE, SMTP_KEY
from twofa.security.sealing import V2_HEAD_LENGTH, V2_PREFIX, head_of
from twofa.services.second_factor.challenges import DRAFT_PURPOSE, SHOW_PURPOSE
from twofa.services.second_factor.credential_store import secret_purpose
from twofa.services.settings.duo import DUO_KEY, SKEY_PURPOSE
from twofa.storage.applications import SIGNING_KEY_PURPOSE, SealedSigningKey, SealedSigningKeys
from twofa.storage.oidc_tables import OidcSigningKeyRow
from twofa.storage.saml import SAML_KEY_PURPOSE
from twofa.storage.saml_tables import SamlSigningKeyRow
from twofa.storage.sealed_values import (
    ChallengePayload,
    ChallengePayloads,
    CredentialSecrets,
    SealedColumn,
    SettingDocument,
    SettingDocuments,
)

# Which field of which console setting is sealed, and for what.
SEALED_SETTING_FIELDS: Final = {
    DUO_KEY: {"skey_sealed": SKEY_PURPOSE},
    SMTP_KEY: {"password_sealed": PASSWORD_PURPOSE},
}
SEALED_CHALLENGE_FIELDS: Final = {"secret": DRAFT_PURPOSE, "show": SHOW_PURPOSE}


@dataclass(frozen=True)
class SealedField:
    name: str  # the column, or the field of the row's JSON document
    sealed: str
    purpose: str


@dataclass(frozen=True)
class SealedHolder:
    """One row holding sealed values, as read; `read` goes back to the place's `rewrite`."""

    where: str  # for the admin: "credential 12", "setting smtp"
    fields: tuple[SealedField, ...]
    read: object


class SealedPlace(Protocol):
    title: str

    def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        """Batches of rows, each read in a short transaction of its own; rows whose sealed
        values all begin with `skip_head` may be left out."""
        ...

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        """Stores the resealed fields if the row is as read; False if it changed meanwhile."""
        ...

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        """How many values begin with each head (security.sealing.head_of)."""
        ...


def _document_fields(document: Mapping[str, Any], purposes: Mapping[str, str]) -> list[SealedField]:
    """The sealed fields a JSON document holds (an empty one means "not set")."""
    return [
        SealedField(name, value, purpose)
        for name, purpose in purposes.items()
        if isinstance(value := document.get(name), str) and value
    ]


async def _counted_heads(
    place: SealedPlace, db: async_sessionmaker[AsyncSession], now: datetime
) -> Counter[str]:
    counts: Counter[str] = Counter()
    async for batch in place.holders(db, 500, now, skip_head=""):
        counts.update(head_of(field.sealed) for holder in batch for field in holder.fields)
    return counts


class CredentialSecretsPlace:
    title = "method secrets"  # authenticator-app keys

    async def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        after = 0
        while True:
            async with db.begin() as session:
                rows = await CredentialSecrets(session).batch(
                    after, batch_size, skip_head=skip_head or None
                )
            if not rows:
                return
            after = rows[-1].id
            yield [
                SealedHolder(
                    f"credential {row.id}",
                    (SealedField("secret_sealed", row.sealed, secret_purpose(row.id)),),
                    row,
                )
                for row in rows
            ]

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        row = holder.read
        assert isinstance(row, SealedColumn)
        return await CredentialSecrets(db).replace(row.id, row.sealed, resealed["secret_sealed"])

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        async with db.begin() as session:
            counts = await CredentialSecrets(session).count_by_head(V2_PREFIX, V2_HEAD_LENGTH)
        return Counter(counts)


class SettingSecretsPlace:
    title = "console settings"  # the Duo secret key, the SMTP password

    async def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        after = ""
        while True:
            async with db.begin() as session:
                documents = await SettingDocuments(session).batch(after, batch_size)
            if not documents:
                return
            after = documents[-1].key
            yield [
                SealedHolder(f"setting {document.key}", tuple(fields), document)
                for document in documents
                if (fields := _document_fields(document.value, self._purposes(document.key)))
            ]

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        document = holder.read
        assert isinstance(document, SettingDocument)
        return await SettingDocuments(db).replace(document, {**document.value, **resealed})

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        return await _counted_heads(self, db, now)

    @staticmethod
    def _purposes(key: str) -> Mapping[str, str]:
        return SEALED_SETTING_FIELDS.get(key, {})


class ChallengeSecretsPlace:
    title = "open challenges"  # a set-up's new key or codes, a page being shown

    async def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        after = ""
        while True:
            async with db.begin() as session:
                payloads = await ChallengePayloads(session).batch(after, batch_size, now)
            if not payloads:
                return
            after = payloads[-1].id
            yield [
                SealedHolder(f"challenge {payload.id[:8]}…", tuple(fields), payload)
                for payload in payloads
                if (fields := _document_fields(self._document(payload), SEALED_CHALLENGE_FIELDS))
            ]

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        payload = holder.read
        assert isinstance(payload, ChallengePayload)
        value = {**self._document(payload), **resealed}
        return await ChallengePayloads(db).replace(payload, value)

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        return await _counted_heads(self, db, now)

    @staticmethod
    def _document(payload: ChallengePayload) -> dict[str, Any]:
        document = json.loads(payload.stored)
        return document if isinstance(document, dict) else {}


class SigningKeysPlace:
    """The private halves of a table of signing keys: the ones that sign ID tokens, or SAML
    assertions."""

    def __init__(
        self,
        title: str,
        kid: InstrumentedAttribute[str],
        sealed: InstrumentedAttribute[str],
        purpose: str,
    ) -> None:
        self.title = title
        self._kid, self._sealed, self._purpose = kid, sealed, purpose

    def _keys(self, db: AsyncSession) -> SealedSigningKeys:
        return SealedSigningKeys(db, self._kid, self._sealed)

    async def holders(
        self, db: async_sessionmaker[AsyncSession], batch_size: int, now: datetime, skip_head: str
    ) -> AsyncIterator[list[SealedHolder]]:
        after = ""
        while True:
            async with db.begin() as session:
                rows = await self._keys(session).batch(after, batch_size)
            if not rows:
                return
            after = rows[-1].kid
            yield [
                SealedHolder(
                    f"signing key {row.kid}",
                    (SealedField(self._sealed.key, row.sealed, self._purpose),),
                    row,
                )
                for row in rows
                if not skip_head or not row.sealed.startswith(skip_head)
            ]

    async def rewrite(
        self, db: AsyncSession, holder: SealedHolder, resealed: Mapping[str, str]
    ) -> bool:
        row = holder.read
        assert isinstance(row, SealedSigningKey)
        return await self._keys(db).replace(row.kid, row.sealed, resealed[self._sealed.key])

    async def heads(self, db: async_sessionmaker[AsyncSession], now: datetime) -> Counter[str]:
        return await _counted_heads(self, db, now)


OIDC_SIGNING_KEYS: Final = SigningKeysPlace(
    "OIDC signing keys",  # the private halves of the keys that sign ID tokens
    OidcSigningKeyRow.kid,
    OidcSigningKeyRow.private_jwk_sealed,
    SIGNING_KEY_PURPOSE,
)
SAML_SIGNING_KEYS: Final = SigningKeysPlace(
    "SAML signing keys",  # the private halves of the keys that sign SAML assertions
    SamlSigningKeyRow.kid,
    SamlSigningKeyRow.private_key_sealed,
    SAML_KEY_PURPOSE,
)

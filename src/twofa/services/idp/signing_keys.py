"""The keys that sign ID tokens: one ES256 and one RS256 key in use, made on first use,
their private halves sealed at rest (security.sealing). `rotate` retires the keys in use and
makes new ones; a retired key stays in the JWKS for `KEY_OVERLAP`, longer than any token it
signed lives, so relying parties that cached the old set still verify what it signed. RS256
signs (the algorithm every relying party must accept, OIDC Core §15.1); ES256 is published
for clients registered for it later."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any, Final

from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.security.sealing import Sealer
from twofa.services.state import audit
from twofa.storage.applications import SIGNING_KEY_PURPOSE, OidcSigningKeys
from twofa.storage.oidc_tables import OidcSigningKeyRow

ALGORITHMS: Final = ("RS256", "ES256")
SIGNING_ALGORITHM: Final = "RS256"
KEY_OVERLAP: Final = timedelta(days=1)
RSA_BITS: Final = 2048

SigningKey = ECKey | RSAKey


def _generate(algorithm: str, kid: str) -> SigningKey:
    parameters: Any = {"kid": kid, "alg": algorithm, "use": "sig"}
    if algorithm == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, private=True)
    return RSAKey.generate_key(RSA_BITS, parameters=parameters, private=True)


class SigningKeyService:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock, sealer: Sealer) -> None:
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._opened: dict[str, SigningKey] = {}  # by kid: a key never changes once made

    def _open(self, row: OidcSigningKeyRow) -> SigningKey:
        key = self._opened.get(row.kid)
        if key is None:
            jwk = self._sealer.open(row.private_jwk_sealed, SIGNING_KEY_PURPOSE)
            kind = ECKey if row.algorithm == "ES256" else RSAKey
            key = kind.import_key(json.loads(jwk))
            self._opened[row.kid] = key
        return key

    def _new_row(self, algorithm: str) -> OidcSigningKeyRow:
        kid = f"{algorithm.lower()}-{secrets.token_hex(8)}"
        key = _generate(algorithm, kid)
        sealed = self._sealer.seal(json.dumps(key.as_dict(private=True)), SIGNING_KEY_PURPOSE)
        return OidcSigningKeyRow(
            kid=kid,
            algorithm=algorithm,
            private_jwk_sealed=sealed,
            created_at=self._clock.now(),
        )

    async def _published(self) -> list[OidcSigningKeyRow]:
        now = self._clock.now()
        async with self._db.begin() as db:
            keys = OidcSigningKeys(db)
            rows = list(await keys.published(now - KEY_OVERLAP))
            in_use = {row.algorithm for row in rows if row.retired_at is None}
            missing = [self._new_row(alg) for alg in ALGORITHMS if alg not in in_use]
            for row in missing:
                keys.add(row)
            # Newest first, as the database lists them: one order however they were read.
            return sorted(missing + rows, key=lambda r: (-r.created_at.timestamp(), r.kid))

    async def signing_key(self, algorithm: str = SIGNING_ALGORITHM) -> SigningKey:
        """The key in use for `algorithm` (made now if there is none)."""
        rows = await self._published()
        row = next(r for r in rows if r.algorithm == algorithm and r.retired_at is None)
        return self._open(row)

    async def published_keys(self) -> KeySet:
        """Every key in use or retired within the overlap: what a token of ours verifies by."""
        return KeySet([self._open(row) for row in await self._published()])

    async def jwks(self) -> dict[str, Any]:
        """The public halves of `published_keys`."""
        return dict((await self.published_keys()).as_dict(private=False))

    async def rotate(self, *, actor: str, client: ClientInfo = CLI) -> list[str]:
        """Retires the keys in use and makes new ones; the kids of the new keys."""
        async with self._db.begin() as db:
            keys = OidcSigningKeys(db)
            await keys.retire_all(self._clock.now())
            rows = [self._new_row(alg) for alg in ALGORITHMS]
            for row in rows:
                keys.add(row)
            kids = [row.kid for row in rows]
            audit.record(
                db, self._clock, "oidc_keys", "rotated", username=actor, client=client, kids=kids
            )
            return kids

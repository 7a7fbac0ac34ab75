"""The signing keys' private halves are sealed at rest with the gateway's secret key, and
`twofa keys rotate` (services.admin.key_rotation) seals them again with a new one: after the
old secret key is gone the same keys still sign, under the same kids."""

from __future__ import annotations

from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from twofa.clock import FrozenClock
from twofa.config import Mode, Settings
from twofa.security.sealing import Sealer, head_of_key, key_id
from twofa.services.admin.key_rotation import KeyRotationService
from twofa.services.runtime import Gateway
from twofa.storage.oidc_tables import OidcSigningKeyRow

OLD = "the-old-secret-key-of-this-gateway-0123456789"
NEW = "the-new-secret-key-prepended-to-the-file-987654"


async def sealed_values(gateway: Gateway) -> dict[str, str]:
    async with gateway.db() as db:
        rows = (await db.scalars(select(OidcSigningKeyRow))).all()
    return {row.kid: row.private_jwk_sealed for row in rows}


async def test_signing_keys_are_sealed_and_resealed_by_a_secret_key_rotation(
    database_url: str, clock: FrozenClock
) -> None:
    def settings(*keys: str) -> Settings:
        return Settings(mode=Mode.DEV, database_url=database_url, secret_key="\n".join(keys))

    old = await Gateway.start(settings(OLD), clock=clock)
    try:
        jwks = await old.oidc_keys.jwks()
        sealed = await sealed_values(old)
    finally:
        await old.close()
    assert len(sealed) == 2
    assert all(value.startswith(head_of_key(key_id(OLD))) for value in sealed.values())
    assert all('"d"' not in value for value in sealed.values())  # no private part in clear

    both = await Gateway.start(settings(NEW, OLD), clock=clock)
    try:
        result = await KeyRotationService(both.db, clock, Sealer([NEW, OLD])).rotate(actor="t")
        assert result.resealed >= 2
    finally:
        await both.close()

    new = await Gateway.start(settings(NEW), clock=clock)
    try:
        resealed = await sealed_values(new)
        assert set(resealed) == set(sealed)
        assert all(value.startswith(head_of_key(key_id(NEW))) for value in resealed.values())
        assert await new.oidc_keys.jwks() == jwks
        key = await new.oidc_keys.signing_key()
        token = jwt.encode({"alg": "RS256", "kid": key.kid}, {"sub": "x"}, key)
        verified = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])  # type: ignore[arg-type]
        assert verified.claims == {"sub": "x"}
    finally:
        await new.close()

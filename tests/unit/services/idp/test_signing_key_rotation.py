"""`twofa keys rotate` reseals the private halves of both identity providers' signing keys,
so the old secret key can go and the same keys still sign (ID tokens, SAML assertions)."""

from __future__ import annotations

from twofa.security.sealing import Sealer
from twofa.services.admin.key_rotation import KeyRotationService
from twofa.services.admin.sealed_places import OIDC_SIGNING_KEYS, SAML_SIGNING_KEYS
from twofa.services.idp.saml.keys import SamlKeyService
from twofa.services.idp.signing_keys import SigningKeyService
from twofa.services.runtime import Gateway

OLD, NEW = "o" * 48, "n" * 48


async def test_both_providers_signing_keys_are_resealed_and_sign_without_the_old_key(
    gateway: Gateway,
) -> None:
    old = Sealer([OLD])
    saml_before = await SamlKeyService(gateway.db, gateway.clock, old).published()
    oidc_before = await SigningKeyService(gateway.db, gateway.clock, old).jwks()

    rotation = KeyRotationService(
        gateway.db, gateway.clock, Sealer([NEW, OLD]), (OIDC_SIGNING_KEYS, SAML_SIGNING_KEYS)
    )
    before = await rotation.usage()
    result = await rotation.rotate(actor="test")
    after = await rotation.usage()

    sealed_by_old = before.counts[rotation.key_ids[1]]
    assert sealed_by_old["SAML signing keys"] == 1
    assert sealed_by_old["OIDC signing keys"] >= 1
    assert result.resealed == sum(sealed_by_old.values()), result
    assert rotation.key_ids[1] not in after.counts
    new_only = Sealer([NEW])
    saml_after = await SamlKeyService(gateway.db, gateway.clock, new_only).published()
    oidc_after = await SigningKeyService(gateway.db, gateway.clock, new_only).jwks()
    assert saml_after.signing.kid == saml_before.signing.kid
    assert oidc_after == oidc_before

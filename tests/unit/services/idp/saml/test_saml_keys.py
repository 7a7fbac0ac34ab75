"""The IdP's signing keys: made on first use and sealed at rest; a rotation announces the new
key (in the metadata, not signing) for a week, then it signs and the old certificate stays
published for a day; an immediate rotation switches at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from twofa.clock import FrozenClock
from twofa.security.sealing import Sealer
from twofa.services.idp.saml.keys import KEY_OVERLAP, KEY_PREPUBLISH, SamlKeyService
from twofa.services.runtime import Gateway
from twofa.storage.saml_tables import SamlSigningKeyRow


def keys_of(gateway: Gateway) -> SamlKeyService:
    return SamlKeyService(gateway.db, gateway.clock, Sealer(gateway.settings.secret_keys))


def private_key_file_readable_by_owner_only(path: str) -> bool:
    """What xmlsec1 reads: the opened key, for this process's user alone."""
    key_file = Path(path)
    return "PRIVATE KEY" in key_file.read_text() and key_file.stat().st_mode & 0o077 == 0


async def test_the_private_key_is_sealed_at_rest(gateway: Gateway) -> None:
    published = await keys_of(gateway).published()
    async with gateway.db() as db:
        [row] = (await db.scalars(select(SamlSigningKeyRow))).all()
    assert "PRIVATE KEY" not in row.private_key_sealed
    assert private_key_file_readable_by_owner_only(published.signing.key_file)


async def test_a_rotation_signs_with_the_new_key_only_after_the_announcement(
    gateway: Gateway, clock: FrozenClock
) -> None:
    keys = keys_of(gateway)
    old = (await keys.published()).signing.kid
    new, starts = await keys.rotate(actor="cli")
    assert starts == clock.now() + KEY_PREPUBLISH
    announced = await keys.published()
    assert announced.signing.kid == old
    assert len(announced.cert_files) == 2

    clock.advance(KEY_PREPUBLISH + timedelta(seconds=1))
    switched = await keys.published()
    assert switched.signing.kid == new
    assert len(switched.cert_files) == 2  # the old certificate during the overlap

    clock.advance(KEY_OVERLAP)
    assert len((await keys.published()).cert_files) == 1


async def test_an_immediate_rotation_switches_at_once(gateway: Gateway) -> None:
    keys = keys_of(gateway)
    old = (await keys.published()).signing.kid
    new, _ = await keys.rotate(actor="cli", immediately=True)
    published = await keys.published()
    assert published.signing.kid == new != old
    assert len(published.cert_files) == 2

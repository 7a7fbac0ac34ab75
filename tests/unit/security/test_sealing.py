"""Sealing secrets at rest with the newest of the gateway's keys, opening with any of them."""

import pytest

from tests.support.sealing_v1 import seal_v1
from twofa.security.sealing import Sealer, SealError, key_id, key_id_of

SECRET = "a-gateway-secret-of-at-least-32-characters"
OLDER = "an-older-gateway-secret-of-32-characters-or-more"
NEWER = "a-newer-gateway-secret-prepended-to-the-key-file"
# Sealed by twofa before key ids (the v1 format), with SECRET and with OLDER.
V1_BY_SECRET = "v1:iYhPg02Eb3dQ+0O5p81IT/K23otnUyjap6B+oC2GV/InsSQjnidGprhb"  # "duo secret key"
V1_BY_OLDER = "v1:bOMjXk35DEYFaAf1a2AWyO7G5TKno9cLvGKNKMokViBZw6VdDg=="  # "totp seed"


def test_sealed_value_opens_with_the_same_secret_and_purpose() -> None:
    sealer = Sealer(SECRET)
    sealed = sealer.seal("duo secret key", "duo.skey")
    assert sealed.startswith(f"v2:{key_id(SECRET)}:")
    assert "duo secret key" not in sealed
    assert sealer.open(sealed, "duo.skey") == "duo secret key"


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = Sealer(SECRET)
    assert sealer.seal("same", "p") != sealer.seal("same", "p")


@pytest.mark.parametrize(("secret", "purpose"), [(SECRET + "x", "duo.skey"), (SECRET, "totp.seed")])
def test_another_secret_or_purpose_cannot_open_it(secret: str, purpose: str) -> None:
    sealed = Sealer(SECRET).seal("duo secret key", "duo.skey")
    with pytest.raises(SealError, match="cannot be decrypted"):
        Sealer(secret).open(sealed, purpose)


def test_tampered_value_is_refused() -> None:
    sealed = Sealer(SECRET).seal("duo secret key", "duo.skey")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealError):
        Sealer(SECRET).open(tampered, "duo.skey")
    with pytest.raises(SealError, match="format"):
        Sealer(SECRET).open("plain text", "duo.skey")


def test_the_newest_key_seals_and_every_listed_key_opens() -> None:
    by_older = Sealer([OLDER]).seal("totp seed", "credential.secret:7")
    rotating = Sealer([NEWER, OLDER])

    resealed = rotating.seal("totp seed", "credential.secret:7")

    assert rotating.open(by_older, "credential.secret:7") == "totp seed"
    assert key_id_of(resealed) == key_id(NEWER) == rotating.newest_key_id
    assert Sealer([NEWER]).open(resealed, "credential.secret:7") == "totp seed"


def test_a_key_file_lists_keys_newest_first_and_skips_blanks_and_comments() -> None:
    sealer = Sealer(f"# added 2025-06-01\n{NEWER}\n\n  {OLDER}  \n")
    assert sealer.key_ids == (key_id(NEWER), key_id(OLDER))


def test_the_key_id_is_a_fingerprint_not_the_key() -> None:
    kid = key_id(SECRET)
    assert len(kid) == 12
    assert int(kid, 16) >= 0  # hex, so it can sit in a LIKE-free prefix comparison
    assert kid not in SECRET
    assert key_id(SECRET) == kid  # stable: the same key always has the same id
    assert key_id(SECRET + "x") != kid


def test_v1_values_open_with_whichever_listed_key_sealed_them() -> None:
    sealer = Sealer([NEWER, OLDER, SECRET])
    assert sealer.open(V1_BY_SECRET, "duo.skey") == "duo secret key"
    assert sealer.open(V1_BY_OLDER, "credential.secret:7") == "totp seed"
    assert Sealer(SECRET).open(V1_BY_SECRET, "duo.skey") == "duo secret key"  # unchanged
    # the tests' stand-in for the older code seals what the older code did
    assert sealer.open(seal_v1(OLDER, "smtp", "smtp.password"), "smtp.password") == "smtp"


def test_a_v1_value_whose_key_is_gone_is_refused_clearly() -> None:
    with pytest.raises(SealError, match="no key in secret_key opens it"):
        Sealer([NEWER, SECRET]).open(V1_BY_OLDER, "credential.secret:7")


def test_attack_a_value_sealed_by_a_removed_key_is_refused_with_its_key_id() -> None:
    sealed = Sealer([OLDER]).seal("duo secret key", "duo.skey")
    with pytest.raises(SealError, match=f"sealed by the key {key_id(OLDER)}, which is not in"):
        Sealer([NEWER, SECRET]).open(sealed, "duo.skey")


def test_attack_relabelling_a_value_with_another_key_id_is_refused() -> None:
    """Claiming the newest key's id makes an old value look current; it then fails to open
    (and a rotation reports it) rather than passing as rotated."""
    rotating = Sealer([NEWER, OLDER])
    by_older = Sealer([OLDER]).seal("duo secret key", "duo.skey")
    relabelled = by_older.replace(key_id(OLDER), key_id(NEWER), 1)

    assert rotating.is_current(relabelled)
    with pytest.raises(SealError, match="altered"):
        rotating.open(relabelled, "duo.skey")


def test_attack_downgrading_a_v2_value_to_v1_is_refused() -> None:
    """The key id is bound into the associated data: the same ciphertext without its head
    does not open."""
    sealed = Sealer(SECRET).seal("duo secret key", "duo.skey")
    downgraded = "v1:" + sealed.split(":", 2)[2]
    with pytest.raises(SealError):
        Sealer(SECRET).open(downgraded, "duo.skey")


@pytest.mark.parametrize(
    "tampered",
    [
        "v2:" + "0" * 12 + ":",  # no ciphertext
        "v2:short:AAAA",  # a malformed key id
        "v2:{kid}:not base64!",
        "v2:{kid}:AAAA",  # shorter than a nonce and tag
    ],
)
def test_malformed_v2_values_are_refused(tampered: str) -> None:
    with pytest.raises(SealError):
        Sealer(SECRET).open(tampered.format(kid=key_id(SECRET)), "duo.skey")


def test_is_current_only_for_values_of_the_newest_key() -> None:
    rotating = Sealer([NEWER, OLDER])
    assert rotating.is_current(rotating.seal("x", "p"))
    assert not rotating.is_current(Sealer([OLDER]).seal("x", "p"))
    assert not rotating.is_current(V1_BY_OLDER)  # v1 names no key: a rotation rewrites it
    assert not rotating.is_current("plain text")


def test_the_same_key_twice_or_no_key_at_all_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        Sealer([SECRET, OLDER, SECRET])
    with pytest.raises(ValueError, match="at least one key"):
        Sealer("# only a comment\n")

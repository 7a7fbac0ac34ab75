import pytest

from twofa.security.sealing import Sealer, SealError

SECRET = "a-gateway-secret-of-at-least-32-characters"


def test_sealed_value_opens_with_the_same_secret_and_purpose() -> None:
    sealer = Sealer(SECRET)
    sealed = sealer.seal("duo secret key", "duo.skey")
    assert sealed.startswith("v1:")
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

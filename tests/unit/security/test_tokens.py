"""Bearer tokens: long, URL-safe, unique; stored only as a stable SHA-256 hex digest."""

from __future__ import annotations

import re

from twofa.security.tokens import new_token, same_token, token_digest


def test_token_is_url_safe_and_carries_256_bits() -> None:
    token = new_token()
    assert len(token) == 43  # 32 bytes in unpadded base64url
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_tokens_are_unique() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000


def test_digest_is_sha256_hex_and_stable() -> None:
    assert token_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    token = new_token()
    assert token_digest(token) == token_digest(token)
    assert re.fullmatch(r"[0-9a-f]{64}", token_digest(token))


def test_different_tokens_have_different_digests() -> None:
    assert token_digest(new_token()) != token_digest(new_token())
    assert token_digest("a") != token_digest("A")


def test_digest_does_not_contain_the_token() -> None:
    token = new_token()
    assert token not in token_digest(token)


def test_same_token_compares_exactly() -> None:
    token = new_token()
    assert same_token(token, token)
    assert not same_token(token, token[:-1])
    assert not same_token(token, token + "x")
    assert not same_token(token, new_token())
    assert same_token("ünï", "ünï")

"""argon2id password hashes: right and wrong passwords, missing or malformed hashes."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from twofa.security.passwords import hash_password, needs_rehash, verify_password


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse battery staple")


def test_hash_is_argon2id(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$")
    assert "correct horse" not in stored


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_right_password_verifies(stored: str) -> None:
    assert verify_password(stored, "correct horse battery staple") is True


@pytest.mark.parametrize("attempt", ["wrong", "", "correct horse battery staple ", "CORRECT"])
def test_wrong_password_does_not_verify(stored: str, attempt: str) -> None:
    assert verify_password(stored, attempt) is False


def test_no_hash_never_verifies() -> None:
    assert verify_password(None, "anything") is False
    assert verify_password(None, "") is False


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$bad",
        "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
        "5f4dcc3b5aa765d61d8327deb882cf99",
    ],
)
def test_malformed_hash_does_not_verify(garbage: str) -> None:
    assert verify_password(garbage, "password") is False


def test_hash_of_another_password_does_not_verify(stored: str) -> None:
    assert verify_password(hash_password("other"), "correct horse battery staple") is False


def test_empty_stored_hash_never_verifies() -> None:
    assert verify_password("", "twofa-dummy-password-for-constant-time") is False


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_fresh_hash_needs_no_rehash(stored: str) -> None:
    assert needs_rehash(stored) is False


def test_weak_parameters_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password(weak, "pw") is True
    assert needs_rehash(weak) is True

"""argon2id password hashes at the configured cost: right and wrong passwords, missing or
malformed hashes, and which stored hashes need making again."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.profiles import RFC_9106_LOW_MEMORY

from twofa.config.passwords import PasswordSettings
from twofa.security.passwords import Argon2Cost, PasswordHashing

HASHING = PasswordHashing()
LIGHT = Argon2Cost(time_cost=1, memory_kib=19_456, parallelism=1)


@pytest.fixture(scope="module")
def stored() -> str:
    return HASHING.hash("correct horse battery staple")


def test_hash_is_argon2id(stored: str) -> None:
    assert stored.startswith("$argon2id$v=19$")
    assert "correct horse" not in stored


def test_hashes_are_salted() -> None:
    assert HASHING.hash("same") != HASHING.hash("same")


def test_right_password_verifies(stored: str) -> None:
    assert HASHING.verify(stored, "correct horse battery staple") is True


@pytest.mark.parametrize("attempt", ["wrong", "", "correct horse battery staple ", "CORRECT"])
def test_wrong_password_does_not_verify(stored: str, attempt: str) -> None:
    assert HASHING.verify(stored, attempt) is False


def test_no_hash_never_verifies() -> None:
    assert HASHING.verify(None, "anything") is False
    assert HASHING.verify(None, "") is False


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
    assert HASHING.verify(garbage, "password") is False


def test_hash_of_another_password_does_not_verify(stored: str) -> None:
    assert HASHING.verify(HASHING.hash("other"), "correct horse battery staple") is False


def test_empty_stored_hash_never_verifies() -> None:
    assert HASHING.verify("", "twofa-dummy-password-for-constant-time") is False


def test_empty_password_cannot_be_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        HASHING.hash("")


def test_fresh_hash_needs_no_rehash(stored: str) -> None:
    assert HASHING.needs_rehash(stored) is False


def test_weak_parameters_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert HASHING.verify(weak, "pw") is True
    assert HASHING.needs_rehash(weak) is True


def test_hashes_carry_the_configured_cost() -> None:
    light = PasswordHashing(LIGHT)
    made = light.hash("correct horse battery staple")
    assert "$m=19456,t=1,p=1$" in made
    assert light.needs_rehash(made) is False
    assert HASHING.needs_rehash(made) is True  # the default cost differs: made again
    assert HASHING.verify(made, "correct horse battery staple") is True  # still checks


def test_the_dummy_hash_of_unknown_users_costs_the_configured_work() -> None:
    light = PasswordHashing(LIGHT)
    assert light.verify(None, "anything") is False
    assert "$m=19456,t=1,p=1$" in light._dummy_hash  # the timing a real user's check has


def test_default_cost_is_argon2_cffis_rfc_9106_low_memory_profile() -> None:
    profile = RFC_9106_LOW_MEMORY
    expected = (profile.time_cost, profile.memory_cost, profile.parallelism)
    settings = PasswordSettings()
    assert (Argon2Cost().time_cost, Argon2Cost().memory_kib, Argon2Cost().parallelism) == expected
    assert (
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
    ) == expected

"""Password hashing with argon2id. Verification of an unknown user costs the same as a known
one (a dummy hash is checked), so timing does not reveal which usernames exist."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY_HASH = _HASHER.hash("twofa-dummy-password-for-constant-time")


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("a password cannot be empty")
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """False for a wrong password, a malformed hash or no hash (after spending the same time)."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)

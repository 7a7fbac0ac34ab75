"""Password hashing with argon2id at the cost the settings name (`[passwords]`), built once by
the composition root and passed to whoever hashes or checks a password. Verification of an
unknown user costs the same as a known one (a dummy hash is checked), so timing does not
reveal which usernames exist."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Argon2Cost:
    """argon2id's work factors; the defaults are argon2-cffi's (RFC 9106, low memory)."""

    time_cost: int = 3
    memory_kib: int = 65_536
    parallelism: int = 4


class PasswordHashing:
    def __init__(self, cost: Argon2Cost | None = None) -> None:
        self.cost = cost or Argon2Cost()
        self._hasher = PasswordHasher(
            time_cost=self.cost.time_cost,
            memory_cost=self.cost.memory_kib,
            parallelism=self.cost.parallelism,
        )

    @cached_property
    def _dummy_hash(self) -> str:
        # Made at the first check, not at start-up: each CLI call builds a hasher and most
        # never check a password. Same cost as real hashes, so unknown names take as long.
        return self._hasher.hash("twofa-dummy-password-for-constant-time")

    def hash(self, password: str) -> str:
        if not password:
            raise ValueError("a password cannot be empty")
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """False for a wrong password, a malformed hash or no hash (after the same work)."""
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(
                password_hash
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether `password_hash` was made with other parameters than the configured ones."""
        return self._hasher.check_needs_rehash(password_hash)

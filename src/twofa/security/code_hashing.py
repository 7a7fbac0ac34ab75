"""Slow hashes for the single-use parts of second factors: backup codes and security answers.
Both are argon2id, at two costs: a backup code carries 50 random bits, so a moderate cost
already makes a stolen table useless; a security answer is guessable, so it gets the cost of
a password. These functions block for tens to hundreds of milliseconds: methods run them
through a `Hasher` (the gateway's one `hashing_pool.HashingPool`), never on the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol, TypeVar, TypeVarTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# 8 MiB, 2 passes: about 10 ms here. Ten codes are checked against one wrong guess, and 2^50
# guesses per code at this cost are out of anyone's reach.
_CODE_HASHER: Final = PasswordHasher(time_cost=2, memory_cost=8 * 1024, parallelism=1)
# The library's recommended password parameters (RFC 9106's second choice): answers such as
# a pet's name have little entropy, so they are hashed like passwords.
_ANSWER_HASHER: Final = PasswordHasher()

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Hasher(Protocol):
    """Where slow hashes run: off the event loop, in a bounded pool. `run` raises
    `hashing_pool.HashingBusy` (a 503 "busy, try again") when the pool is full, before
    `work` starts. A caller with several hashes to compute passes them as one `work`."""

    async def run(self, work: Callable[[*Ts], T], *args: *Ts) -> T: ...


def hash_code(code: str) -> str:
    if not code:
        raise ValueError("a code cannot be empty")
    return _CODE_HASHER.hash(code)


def verify_code(digest: str, code: str) -> bool:
    """False for a wrong code and for a digest that is not an argon2 hash."""
    return _verify(_CODE_HASHER, digest, code)


def hash_answer(answer: str) -> str:
    if not answer:
        raise ValueError("an answer cannot be empty")
    return _ANSWER_HASHER.hash(answer)


def verify_answer(digest: str, answer: str) -> bool:
    return _verify(_ANSWER_HASHER, digest, answer)


def _verify(hasher: PasswordHasher, digest: str, text: str) -> bool:
    try:
        return hasher.verify(digest, text)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

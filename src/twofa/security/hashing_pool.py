"""Password hashing off the event loop: argon2 takes 75-180 ms of CPU per check on purpose,
and run inline it stalls every other request of the worker (forward-auth included) for that
long. Checks run in a thread pool sized to the cores (argon2-cffi releases the GIL while it
hashes), and at most `queue_limit` wait their turn: one more is refused at once with
`HashingBusy`, a plain "busy, try again" answer, rather than a queue that grows without bound
while a sign-in storm lasts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from twofa.errors import Unavailable
from twofa.security.passwords import PasswordHashing

T = TypeVar("T")
QUEUED_PER_THREAD: Final = 8  # a second or so of waiting at the default cost, then "busy"


class HashingBusy(Unavailable):
    """Every hashing thread is busy and the queue is full: the sign-in is refused unchecked."""

    @property
    def user_message(self) -> str:
        return "Many people are signing in right now. Please try again in a moment."


class HashingPool:
    def __init__(
        self, hashing: PasswordHashing, threads: int | None = None, queue_limit: int | None = None
    ) -> None:
        self.hashing = hashing
        self.threads = threads or os.cpu_count() or 2
        self.queue_limit = queue_limit or self.threads * QUEUED_PER_THREAD
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="twofa-argon2")
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Checks running or waiting now (for the queue-depth metric and tests)."""
        return self._in_flight

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await self._run(self.hashing.verify, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self._run(self.hashing.hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hashing.needs_rehash(password_hash)  # parses the header: no hashing

    async def _run(self, work: Callable[..., T], *args: str | None) -> T:
        if self._in_flight >= self.threads + self.queue_limit:
            raise HashingBusy("every password-hashing thread is busy and the queue is full")
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

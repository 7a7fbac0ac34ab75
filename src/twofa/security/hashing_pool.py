"""Slow hashing off the event loop, for every argon2 computation of the gateway: passwords,
backup codes and security answers. argon2 takes tens to hundreds of ms of CPU per hash on
purpose, and run inline it stalls every other request of the worker (forward-auth included)
for that long. Work runs in a thread pool sized to the cores (argon2-cffi releases the GIL
while it hashes), and at most `queue_limit` jobs wait their turn: one more is refused at once
with `HashingBusy`, a plain "busy, try again" answer, rather than a queue that grows without
bound while a sign-in storm lasts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar, TypeVarTuple

from twofa.errors import Unavailable
from twofa.security.passwords import PasswordHashing
from twofa.telemetry import HASHING_QUEUE_DEPTH

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
QUEUED_PER_THREAD: Final = 8  # a second or so of waiting at the default cost, then "busy"


# How much lower than the event loop a hashing thread runs (Linux nice levels, per thread; the
# lane threads argon2 starts for parallelism inherit it). A sign-in storm then takes the CPU
# the event loops leave, instead of making every forward-auth check wait its turn behind it.
HASHING_NICENESS: Final = 10


def _yield_to_the_event_loop() -> None:
    if hasattr(os, "setpriority"):
        # Not permitted (a locked-down container): it runs at the event loop's level.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


class HashingBusy(Unavailable):
    """Every hashing thread is busy and the queue is full: the request is refused unchecked."""

    @property
    def user_message(self) -> str:
        return "Many people are signing in right now. Please try again in a moment."


class HashingPool:
    """The gateway's one pool (built in `services.runtime`); it is a `code_hashing.Hasher`."""

    def __init__(
        self, hashing: PasswordHashing, threads: int | None = None, queue_limit: int | None = None
    ) -> None:
        self.hashing = hashing
        self.threads = threads or os.cpu_count() or 2
        # 0 means none may wait (one job per thread runs), not "the default".
        default_limit = self.threads * QUEUED_PER_THREAD
        self.queue_limit = default_limit if queue_limit is None else queue_limit
        self._executor = ThreadPoolExecutor(
            self.threads, thread_name_prefix="twofa-argon2", initializer=_yield_to_the_event_loop
        )
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting now (for the queue-depth metric and tests)."""
        return self._in_flight

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await self.run(self.hashing.verify, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self.run(self.hashing.hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hashing.needs_rehash(password_hash)  # parses the header: no hashing

    async def run(self, work: Callable[[*Ts], T], *args: *Ts) -> T:
        """`work(*args)` in a hashing thread, as one job: one place in the queue, whatever it
        computes. A request with several hashes to compute (ten backup codes, two answers)
        passes them all as one `work`, so it is admitted or refused whole (never refused
        half-way through) and never holds more than one thread and one place: it cannot
        crowd other sign-ins out of the queue."""
        if self._in_flight >= self.threads + self.queue_limit:
            raise HashingBusy("every hashing thread is busy and the queue is full")
        self._in_flight += 1
        HASHING_QUEUE_DEPTH.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        finally:
            self._in_flight -= 1
            HASHING_QUEUE_DEPTH.dec()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

"""A hashing pool filled to its limit, for tests of what a busy gateway answers: every thread
and every queue place is taken by a job that waits until the block ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from twofa.security.hashing_pool import HashingPool

HOLD_AT_MOST_S = 60.0  # a test that fails inside the block must not hang the pool's threads


@asynccontextmanager
async def pool_full(pool: HashingPool) -> AsyncIterator[None]:
    release = threading.Event()
    places = pool.threads + pool.queue_limit - pool.in_flight
    holders = [asyncio.ensure_future(pool.run(release.wait, HOLD_AT_MOST_S)) for _ in range(places)]
    await asyncio.sleep(0)  # each holder takes its place in its first step, all in this one
    assert pool.in_flight == pool.threads + pool.queue_limit
    try:
        yield
    finally:
        release.set()
        await asyncio.gather(*holders)


def counting_jobs(pool: HashingPool, jobs: list[str]) -> Callable[..., Awaitable[Any]]:
    """`pool.run`, noting the name of each job's thread in `jobs` (set it on the pool)."""
    run = pool.run

    def named(work: Callable[..., Any], *args: Any) -> Any:
        jobs.append(threading.current_thread().name)
        return work(*args)

    async def counted(work: Callable[..., Any], *args: Any) -> Any:
        return await run(named, work, *args)

    return counted

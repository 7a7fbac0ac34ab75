"""argon2 off the event loop: checks run in the pool's threads while the loop goes on serving,
and past the queue's limit a check is refused at once instead of waiting without bound."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import REGISTRY

from twofa.security.hashing_pool import HashingBusy, HashingPool
from twofa.security.passwords import Argon2Cost, PasswordHashing

CHEAP = Argon2Cost(time_cost=1, memory_kib=19_456, parallelism=1)


@pytest.fixture
def pool() -> HashingPool:
    return HashingPool(PasswordHashing(), threads=1, queue_limit=1)


async def test_a_check_leaves_the_event_loop_free(pool: HashingPool) -> None:
    stored = await pool.hash("correct horse battery staple")
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(ticking())
    assert await pool.verify(stored, "correct horse battery staple")
    assert not await pool.verify(stored, "wrong horse battery staple")
    ticker.cancel()
    assert ticks > 10, "the loop ran other work while argon2 hashed"
    pool.close()


async def test_attack_a_sign_in_storm_is_refused_past_the_queue_not_queued_forever(
    pool: HashingPool,
) -> None:
    stored = await pool.hash("correct horse battery staple")
    storm = [pool.verify(stored, f"guess {n}") for n in range(5)]

    results = await asyncio.gather(*storm, return_exceptions=True)

    busy = [result for result in results if isinstance(result, HashingBusy)]
    assert len(busy) == 3  # one running, one waiting, the rest refused at once
    assert results[:2] == [False, False]
    assert busy[0].user_message.startswith("Many people are signing in right now")
    assert pool.in_flight == 0
    pool.close()


async def test_an_unknown_user_costs_a_check_too() -> None:
    pool = HashingPool(PasswordHashing(CHEAP), threads=1)
    assert not await pool.verify(None, "anything at all here")
    pool.close()


def queue_depth() -> float:
    value = REGISTRY.get_sample_value("twofa_hashing_queue_depth")
    assert value is not None
    return value


async def test_any_slow_work_runs_in_the_pool_and_shows_in_the_queue_depth() -> None:
    """Backup codes and security answers go through `run` too: the same threads, the same
    limit and the same gauge as passwords."""
    pool = HashingPool(PasswordHashing(CHEAP), threads=1, queue_limit=0)
    before = queue_depth()
    release = threading.Event()

    def held_then_named() -> str:
        release.wait(30)
        return threading.current_thread().name

    job = asyncio.ensure_future(pool.run(held_then_named))
    await asyncio.sleep(0)  # its first step takes the place
    assert pool.in_flight == 1
    assert queue_depth() == before + 1

    with pytest.raises(HashingBusy):  # one thread, no queue: the second job is refused at once
        await pool.run(str.upper, "refused")
    assert queue_depth() == before + 1  # a refused job never counted

    release.set()
    assert (await job).startswith("twofa-argon2")
    assert await pool.run(str.upper, "then admitted") == "THEN ADMITTED"
    assert queue_depth() == before
    assert pool.in_flight == 0
    pool.close()

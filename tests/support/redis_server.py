"""The Redis server the change-feed tests talk to (127.0.0.1:6379 unless TEST_REDIS_URL says
otherwise), and a channel of each test's own: a channel is server-wide, and the suite runs in
several processes at once."""

from __future__ import annotations

import os
import secrets

import redis.asyncio as redis
from redis.exceptions import RedisError

from tests.support.databases import require_or_skip

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def reachable_redis() -> str:
    """The server's URL, or a skip (a failure in CI) naming why it cannot be used."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        require_or_skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


def own_channel() -> str:
    return f"twofa-test:{secrets.token_hex(6)}"

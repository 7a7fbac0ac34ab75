"""What the attack tests on the change feeds (tests/integration/test_session_revocation_attacks)
use to reach each feed the way an attacker or a broken network would: a gateway's path to Redis
or PostgreSQL through a `tcp_proxy`, Redis's own count of subscribers, forged messages and a
flood of them from another process, the server-side end of a LISTEN connection, and the local
feed's socket of a process."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import redis.asyncio as redis

from tests.support.revocation import lets_in
from twofa.services.runtime import Gateway
from twofa.services.state.change_feed import ChangeFeed
from twofa.services.state.local_feed import feed_directory
from twofa.storage.repositories import Users


def redis_via(proxy_port: int) -> str:
    return f"redis://127.0.0.1:{proxy_port}/0"


async def subscribers(url: str, channel: str) -> int:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        [(_, count)] = await client.pubsub_numsub(channel)
        return int(count)
    finally:
        await client.aclose()


def subscribed(url: str, channel: str, count: int = 1) -> Callable[[], Awaitable[bool]]:
    """Whether Redis has registered `count` subscribers of the channel."""

    async def check() -> bool:
        return await subscribers(url, channel) >= count

    return check


def via(database_url: str, proxy_port: int) -> str:
    return database_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy_port}/")


async def terminate_listeners(database_url: str) -> int:
    """Ends every LISTEN connection of the database from the server's side (a failover, an
    admin's pg_terminate_backend)."""
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'twofa change feed'"
            )
        )
    finally:
        await admin.close()


def local_socket_of(node: Gateway) -> Path:
    assert node.settings.sqlite_file is not None
    assert node.change_feed is not None
    directory = feed_directory(Path(node.settings.sqlite_file).absolute())
    (own,) = [p for p in directory.iterdir() if p.name.startswith(node.change_feed.node)]
    return own


def forged(**fields: object) -> str:
    message: dict[str, object] = {
        "node": "attacker",
        "sessions": [],
        "users": [],
        "settings": False,
        "access_rules": False,
        "changed_users": [],
    }
    message.update(fields)
    return json.dumps(message)


async def publish(url: str, channel: str, messages: list[str]) -> None:
    client = redis.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for message in messages:
                pipe.publish(channel, message)
            await pipe.execute()
    finally:
        await client.aclose()


def feed_of(node: Gateway) -> ChangeFeed:
    assert node.change_feed is not None
    return node.change_feed


async def not_let_in(node: Gateway, token: str) -> bool:
    return not await lets_in(node, token)()


async def user_id(node: Gateway, username: str) -> int:
    async with node.db() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        return user.id


FLOOD = """
import json, sys, redis
url, channel, count, each = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = redis.Redis.from_url(url)
pipe = client.pipeline(transaction=False)
for i in range(count):
    users = list(range(10**9 + i * each, 10**9 + (i + 1) * each))
    pipe.publish(channel, json.dumps({"node": "attacker", "sessions": [], "users": users,
                                      "settings": False, "access_rules": False}))
pipe.execute()
"""


async def flood_from_another_process(
    url: str, channel: str, messages: int, users_each: int
) -> None:
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, url, channel, str(messages), str(users_each)
    )
    assert await asyncio.wait_for(publisher.wait(), 30) == 0

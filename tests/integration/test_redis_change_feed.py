"""Two gateway processes on one database, told of each other's changes through a real Redis
(services.state.change_feed): a sign-out, a new password and a settings save on one reach the
other's caches at once. The other's caches are frozen here (their clocks never move), so
without the feed they would keep their copies for good, and a control test shows they do.
Also: messages that are not twofa's, and Redis down at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, seed_users
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.servers import free_port
from twofa.clock import FrozenClock
from twofa.config import Settings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import ForwardAuthService, OriginalRequest, Verdict
from twofa.services.runtime import Gateway
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.services.signin.login import LoginResult
from twofa.services.state.change_feed import RedisChangeFeed
from twofa.storage.change_notes import Changes

APP = "app.example.test"
WIKI = OriginalRequest("https", APP, "/wiki/Home", "192.0.2.10")


def node_settings(database_url: str, redis_url: str | None, channel: str) -> Settings:
    extra = {"redis_url": redis_url, "redis_channel": channel} if redis_url else {}
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{free_port()}",
        access={"domains": [APP], "rules": [{"domain": APP, "policy": "one_factor"}]},
        **extra,
    )


def frozen_forward_auth(node: Gateway) -> ForwardAuthService:
    """The node's forward-auth with a clock that never moves: what it cached, it keeps
    until told otherwise."""
    frozen = ForwardAuthService(
        node.db, node.sessions, node.settings.access, clock=FrozenClock(datetime.now(UTC))
    )
    node.forward_auth = frozen
    return frozen


@asynccontextmanager
async def two_nodes(
    tmp_path: Path, redis_url: str | None
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    async with sqlite_database(tmp_path) as url:
        settings = node_settings(url, redis_url, own_channel())
        await seed_users(settings)
        first = await Gateway.start(settings)
        second = await Gateway.start(settings)
        try:
            for node in (first, second):
                if node.change_feed is not None:
                    assert await node.change_feed.wait_subscribed(5), "never subscribed"
            yield first, second
        finally:
            await first.close()
            await second.close()


async def signed_in_bob(node: Gateway) -> str:
    """Bob (no second factor needed) signs in on `node`; his session cookie's value."""
    _, anonymous = await node.sessions.open(NO_CLIENT)
    outcome = await node.login.sign_in(anonymous, "bob", PASSWORDS["bob"], NO_CLIENT)
    assert outcome.result is LoginResult.SIGNED_IN, outcome
    assert outcome.token is not None
    return outcome.token


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def verdict(forward_auth: ForwardAuthService, token: str) -> Verdict:
    return (await forward_auth.check(token, WIKI)).verdict


async def bob_cached_on_the_second(
    first: Gateway, second: Gateway
) -> tuple[ForwardAuthService, str]:
    """Bob signs in on the first node, and the second's frozen forward-auth caches him."""
    token = await signed_in_bob(first)
    other = frozen_forward_auth(second)
    assert await verdict(other, token) is Verdict.ALLOW
    return other, token


async def sign_out(node: Gateway, token: str) -> None:
    session = await node.sessions.load(token)
    assert session is not None
    await node.sessions.end(session)


@pytest.fixture
async def redis_url() -> str:
    return await reachable_redis()


async def test_a_sign_out_on_one_node_ends_the_session_on_the_other_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_nodes(tmp_path, redis_url) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)

        await sign_out(first, token)

        assert await eventually(lambda: _is(other, token, Verdict.SIGN_IN))


async def test_without_redis_a_node_keeps_its_copy_until_its_second_passes(
    tmp_path: Path,
) -> None:
    """The control: the same steps, no feed, and the frozen node still lets the ended
    session in (what `CACHE_SECONDS` bounds in real time)."""
    async with two_nodes(tmp_path, None) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)

        await sign_out(first, token)

        assert not await eventually(lambda: _is(other, token, Verdict.SIGN_IN), within_s=0.5)


async def test_a_new_password_on_one_node_ends_the_users_sessions_on_the_other(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_nodes(tmp_path, redis_url) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)

        await first.accounts.set_password("bob", "a-brand-new-password-1")

        assert await eventually(lambda: _is(other, token, Verdict.SIGN_IN))


async def test_a_settings_save_on_one_node_reaches_the_others_cache_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_nodes(tmp_path, redis_url) as (first, second):
        second.console.cache = SettingsCache(
            second.db, second.clock, recheck_s=3600
        )  # never rechecks
        before = await second.console.two_factor()
        changed = TwoFactorConfig(methods=("totp",), first_method="totp", remember_device_days=9)
        assert before != changed

        await first.console.save_two_factor(changed, "admin", NO_CLIENT)

        async def seen() -> bool:
            return (await second.console.two_factor()).remember_device_days == 9

        assert await eventually(seen)


async def test_messages_that_are_not_twofas_are_ignored_and_the_feed_goes_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel, heard = own_channel(), []
    listener = RedisChangeFeed(redis_url, heard.append, channel)
    sender = RedisChangeFeed(redis_url, lambda _: None, channel)
    listener.start()
    publisher = redis.Redis.from_url(redis_url)
    try:
        assert await listener.wait_subscribed(5)
        with caplog.at_level(logging.WARNING, "twofa.change_feed"):
            for junk in ("not json", '{"node": 1}', '{"node": "x", "sessions": [1], "users": [],'
                         ' "settings": false, "access_rules": false}'):  # fmt: skip
                await publisher.publish(channel, junk)
            sender.announce(Changes(ended_sessions=frozenset({"s-1"})))

            async def arrived() -> bool:
                return bool(heard)

            assert await eventually(arrived)
        assert heard == [Changes(ended_sessions=frozenset({"s-1"}))]
        assert caplog.text.count("that is not twofa's") == 3
    finally:
        await publisher.aclose()
        await listener.close()
        await sender.close()


async def test_a_node_does_not_apply_its_own_announcements(redis_url: str) -> None:
    channel, heard = own_channel(), []
    feed = RedisChangeFeed(redis_url, heard.append, channel)
    feed.start()
    observer_heard: list[Changes] = []
    observer = RedisChangeFeed(redis_url, observer_heard.append, channel)
    observer.start()
    try:
        assert await feed.wait_subscribed(5)
        assert await observer.wait_subscribed(5)
        feed.announce(Changes(settings=True))

        async def observed() -> bool:
            return bool(observer_heard)

        assert await eventually(observed)  # it was sent, and heard elsewhere
        assert heard == []
    finally:
        await feed.close()
        await observer.close()


async def test_redis_down_at_start_leaves_the_gateway_working_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    with caplog.at_level(logging.WARNING, "twofa.change_feed"):
        async with two_nodes(tmp_path, None) as (first, _):
            first.follow_other_processes(f"redis://127.0.0.1:{closed_port}/0")
            assert first.change_feed is not None
            assert not await first.change_feed.wait_subscribed(0.5)
            token = await signed_in_bob(first)  # sign-ins go on
            assert await verdict(first.forward_auth, token) is Verdict.ALLOW
            await sign_out(first, token)  # its announcement fails quietly
            await asyncio.sleep(0.2)
    assert "Redis change feed unavailable" in caplog.text
    assert "could not tell the other gateway processes" in caplog.text


async def _is(forward_auth: ForwardAuthService, token: str, expected: Verdict) -> bool:
    return await verdict(forward_auth, token) is expected

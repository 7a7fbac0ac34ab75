"""Two gateway processes on one database, told of each other's changes through each change
feed (services.state): Redis, PostgreSQL's LISTEN/NOTIFY, and the local sockets between the
processes of one machine on SQLite. A sign-out, a new password, a disabled account, a group
change and a settings save on one reach the other's caches at once. The other's forward-auth
runs on a clock that never moves, so without the feed it would keep its copies for good, and
a control test shows it does. Also: a feed that drops comes back by itself; messages that are
not twofa's; Redis down at start."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, seed_users
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.revocation import database, node_settings
from tests.support.servers import free_port
from twofa.clock import FrozenClock
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import ForwardAuthService, OriginalRequest, Verdict
from twofa.services.runtime import Gateway
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.two_factor import TwoFactorConfig
from twofa.services.signin.login import LoginResult
from twofa.services.state.change_feed import RedisChangeFeed
from twofa.services.state.feed_keys import FeedKeys
from twofa.services.state.feed_state import HEARTBEAT_S, SILENCE_LIMIT_S, FeedState
from twofa.services.state.local_feed import SUFFIX, feed_directory
from twofa.storage.change_notes import Changes

APP = "app.example.test"
WIKI = OriginalRequest("https", APP, "/wiki/Home", "192.0.2.10")
READERS_ONLY = OriginalRequest("https", APP, "/library/shelf", "192.0.2.10")
FEEDS = ("redis", "postgresql", "local")


@asynccontextmanager
async def two_nodes(tmp_path: Path, feed: str) -> AsyncIterator[tuple[Gateway, Gateway]]:
    redis_url = await reachable_redis() if feed == "redis" else None
    database_feed = "postgresql" if feed == "none-postgresql" else feed
    async with database(database_feed, tmp_path) as url:
        settings = node_settings(
            url, feed.removesuffix("-postgresql"), redis_url=redis_url, channel=own_channel()
        )
        await seed_users(settings)
        first = await Gateway.start(settings)
        second = await Gateway.start(settings)
        try:
            for node in (first, second):
                if node.change_feed is not None:
                    assert await node.change_feed.wait_live(5), "never connected"
            yield first, second
        finally:
            await first.close()
            await second.close()


class FrozenWhileTheFeedHolds(FrozenClock):
    """Never moves while the node's feed stays on the connection it had at the start, so
    what the node drops, the feed made it drop. If that connection drops (a machine this
    busy can hold up Redis's answers past the silence limit), messages may be lost and the
    promise is kept by reading again every second: the clock then jumps past that second."""

    def __init__(self, feed: FeedState | None) -> None:
        super().__init__(datetime.now(UTC))
        self._feed = feed
        self._generation = feed.live_generation if feed is not None else None
        self.dropped = False

    def monotonic(self) -> float:
        if self._feed is not None and self._feed.live_generation != self._generation:
            self.dropped = True
        return super().monotonic() + (FALLBACK_JUMP_S if self.dropped else 0.0)


FALLBACK_JUMP_S = 3600.0
_clocks: list[FrozenWhileTheFeedHolds] = []


@pytest.fixture(autouse=True)
def _forget_clocks() -> None:
    _clocks.clear()


def frozen_forward_auth(node: Gateway) -> ForwardAuthService:
    """The node's forward-auth on a clock that never moves (while its feed holds): what it
    cached, it keeps until told otherwise."""
    clock = FrozenWhileTheFeedHolds(node.feed_state)
    _clocks.append(clock)
    frozen = ForwardAuthService(
        node.db, node.sessions, node.settings.access, clock=clock, feed=node.feed_state
    )
    node.forward_auth = frozen
    return frozen


async def signed_in(node: Gateway, username: str = "bob") -> str:
    _, anonymous = await node.sessions.open(NO_CLIENT)
    outcome = await node.login.sign_in(anonymous, username, PASSWORDS[username], NO_CLIENT)
    assert outcome.result is LoginResult.SIGNED_IN, outcome
    assert outcome.token is not None
    return outcome.token


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 1.0) -> bool:
    """Within a second: what the issue promises for every node. A frozen node whose feed
    dropped meanwhile is given the time to notice (the silence limit) and read again."""
    if await _polled(check, within_s):
        return True
    return any(clock.dropped for clock in _clocks) and await _polled(check, SILENCE_LIMIT_S + 1.0)


async def _polled(check: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def verdict(
    forward_auth: ForwardAuthService, token: str, url: OriginalRequest = WIKI
) -> Verdict:
    return (await forward_auth.check(token, url)).verdict


def refused(forward_auth: ForwardAuthService, token: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await verdict(forward_auth, token) is Verdict.SIGN_IN

    return check


async def bob_cached_on_the_second(
    first: Gateway, second: Gateway
) -> tuple[ForwardAuthService, str]:
    token = await signed_in(first)
    other = frozen_forward_auth(second)
    assert await verdict(other, token) is Verdict.ALLOW
    return other, token


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_sign_out_on_one_node_ends_the_session_on_the_other_within_a_second(
    tmp_path: Path, feed: str
) -> None:
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)
        session = await first.sessions.load(token)
        assert session is not None

        await first.sessions.end(session)

        assert await eventually(refused(other, token))


@pytest.mark.parametrize("feed", ["none", "none-postgresql"])
async def test_without_a_feed_a_node_keeps_its_copy_until_its_second_passes(
    tmp_path: Path, feed: str
) -> None:
    """The control: the same steps, no feed, and the frozen node still lets the ended
    session in (what `CHECK_SECONDS` bounds in real time)."""
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)
        session = await first.sessions.load(token)
        assert session is not None

        await first.sessions.end(session)

        assert not await eventually(refused(other, token), within_s=0.5)


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    "change", ["new password", "disabled", "2FA reset", "deleted", "signed out everywhere"]
)
async def test_an_admin_change_on_one_node_ends_the_users_sessions_on_the_other(
    tmp_path: Path, feed: str, change: str
) -> None:
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)

        if change == "new password":
            await first.accounts.set_password("bob", "a-brand-new-password-1")
        elif change == "disabled":
            await first.accounts.set_enabled("bob", False)
        elif change == "2FA reset":
            await first.accounts.reset_second_factor("bob")
        elif change == "signed out everywhere":
            await first.accounts.end_sessions("bob")
        else:
            await first.accounts.delete_user("bob")

        assert await eventually(refused(other, token))


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_group_change_on_one_node_reaches_the_others_answers(
    tmp_path: Path, feed: str
) -> None:
    async with two_nodes(tmp_path, feed) as (first, second):
        await first.accounts.add_group("readers")
        await first.accounts.set_membership("readers", "bob", True)
        other, token = await bob_cached_on_the_second(first, second)
        assert await verdict(other, token, READERS_ONLY) is Verdict.ALLOW

        await first.accounts.set_membership("readers", "bob", False)

        async def denied() -> bool:
            return await verdict(other, token, READERS_ONLY) is Verdict.FORBIDDEN

        assert await eventually(denied)


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_settings_save_on_one_node_reaches_the_others_cache_at_once(
    tmp_path: Path, feed: str
) -> None:
    async with two_nodes(tmp_path, feed) as (first, second):
        second.console.cache = SettingsCache(second.db, second.clock, recheck_s=3600)
        before = await second.console.two_factor()
        changed = TwoFactorConfig(methods=("totp",), first_method="totp", remember_device_days=9)
        assert before != changed

        await first.console.save_two_factor(changed, "admin", NO_CLIENT)

        async def seen() -> bool:
            return (await second.console.two_factor()).remember_device_days == 9

        assert await eventually(seen)


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_twofa_command_run_beside_the_gateway_reaches_it_within_a_second(
    tmp_path: Path, feed: str
) -> None:
    """An admin at a shell: `twofa user end-sessions bob` is a process of its own."""
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)
        settings = second.settings
        environ = {
            **os.environ,
            "TWOFA_MODE": "dev",
            "TWOFA_SECRET_KEY": SECRET,
            "TWOFA_DATABASE_URL": settings.database_url,
            "TWOFA_CHANGE_FEED": feed,
            **({"TWOFA_REDIS_URL": settings.redis_url.get_secret_value(),
                "TWOFA_REDIS_CHANNEL": settings.redis_channel} if settings.redis_url else {}),
        }  # fmt: skip
        command = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("twofa")),
            "user",
            "end-sessions",
            "bob",
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(command.communicate(), 60)
        assert command.returncode == 0, output.decode()
        assert b"bob is signed out everywhere" in output

        assert await eventually(refused(other, token))


async def cut_postgres_listener(node: Gateway) -> None:
    """Ends the node's LISTEN connection from the server's side, as a failover would."""
    url = node.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(url)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'twofa change feed'"
        )
        assert ended >= 1
    finally:
        await admin.close()


def local_socket_of(node: Gateway) -> Path:
    assert node.settings.sqlite_file is not None
    directory = feed_directory(Path(node.settings.sqlite_file).absolute())
    assert node.change_feed is not None
    (own,) = [p for p in directory.iterdir() if p.name.startswith(node.change_feed.node)]
    return own


def remove_local_socket(node: Gateway) -> None:
    """What a sender does to a process that did not take a message in time."""
    local_socket_of(node).unlink()


@pytest.mark.parametrize("feed", ["postgresql", "local"])
async def test_a_feed_that_drops_is_reported_lost_and_comes_back_by_itself(
    tmp_path: Path, feed: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_nodes(tmp_path, feed) as (first, second):
        assert second.feed_state is not None
        live_before = second.feed_state.live_generation
        assert live_before is not None
        with caplog.at_level(logging.WARNING, "twofa.change_feed"):
            if feed == "postgresql":
                await cut_postgres_listener(second)
            else:
                remove_local_socket(second)

            async def lost() -> bool:
                return second.feed_state is not None and second.feed_state.live_generation is None

            assert await eventually(lost, within_s=5)
            assert "change feed unavailable" in caplog.text
            assert not second.feed_state.report().live

            async def back() -> bool:
                generation = second.feed_state.live_generation if second.feed_state else None
                return generation is not None and generation > live_before

            assert await eventually(back, within_s=10)
        # and it works again: a sign-out reaches the node that reconnected
        other, token = await bob_cached_on_the_second(first, second)
        session = await first.sessions.load(token)
        assert session is not None
        await first.sessions.end(session)
        assert await eventually(refused(other, token))


@pytest.mark.parametrize("feed", FEEDS)
async def test_a_process_held_up_longer_than_the_silence_limit_keeps_its_feed(
    tmp_path: Path, feed: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its event loop blocked for 1.5 s (a burst of work, a machine paused): the answers to
    its pings wait in the socket meanwhile, so the feed is not taken for lost, and a sign-out
    on the other node right after reaches it through the feed."""
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)
        generation = second.feed_state.live_generation if second.feed_state else None
        assert generation is not None
        with caplog.at_level(logging.WARNING, "twofa.change_feed"):
            time.sleep(SILENCE_LIMIT_S + 0.5)  # noqa: ASYNC251 - the hold-up under test
            await asyncio.sleep(4 * HEARTBEAT_S)
            session = await first.sessions.load(token)
            assert session is not None
            await first.sessions.end(session)
            assert await _polled(refused(other, token), 1.0)
        assert "change feed unavailable" not in caplog.text
        assert second.feed_state is not None
        assert second.feed_state.live_generation == generation


@pytest.mark.parametrize("feed", FEEDS)
async def test_messages_that_are_not_twofas_are_ignored_and_the_feed_goes_on(
    tmp_path: Path, feed: str, caplog: pytest.LogCaptureFixture
) -> None:
    junk = ["not json", '{"node": 1}', '{"node": "x", "sessions": [1], "users": [],'
            ' "settings": false, "access_rules": false}']  # fmt: skip
    async with two_nodes(tmp_path, feed) as (first, second):
        other, token = await bob_cached_on_the_second(first, second)
        with caplog.at_level(logging.WARNING, "twofa.change_feed"):
            await send_junk(second, junk)
            await asyncio.sleep(0.3)
            assert await verdict(other, token) is Verdict.ALLOW  # nothing forgotten, no error
            session = await first.sessions.load(token)
            assert session is not None
            await first.sessions.end(session)
            assert await eventually(refused(other, token))
        hearing = 1 if feed == "local" else 2  # a socket is one process's; a channel both's
        # Said once per process, not once per message: a flood must not cost a line each.
        assert caplog.text.count("that is not twofa's") == hearing


async def send_junk(node: Gateway, messages: list[str]) -> None:
    settings = node.settings
    if settings.change_feed == "redis":
        assert settings.redis_url is not None
        publisher = redis.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            for message in messages:
                await publisher.publish(settings.redis_channel, message)
        finally:
            await publisher.aclose()
    elif settings.change_feed == "postgresql":
        url = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(url)
        try:
            for message in messages:
                await connection.execute("SELECT pg_notify('twofa_changes', $1)", message)
        finally:
            await connection.close()
    else:
        own = local_socket_of(node)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for message in messages:
                sender.sendto(message.encode(), str(own))


async def test_a_node_does_not_apply_its_own_announcements() -> None:
    redis_url = await reachable_redis()
    channel, heard = own_channel(), []
    keys = FeedKeys([SECRET])
    feed = RedisChangeFeed(redis_url, heard.append, channel, keys=keys)
    feed.start()
    observer_heard: list[Changes] = []
    observer = RedisChangeFeed(redis_url, observer_heard.append, channel, keys=keys)
    observer.start()
    try:
        assert await feed.wait_live(5)
        assert await observer.wait_live(5)
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
    async with sqlite_database(tmp_path) as url:
        settings = node_settings(
            url, "redis", redis_url=f"redis://127.0.0.1:{closed_port}/0", channel=own_channel()
        )
        await seed_users(settings)
        with caplog.at_level(logging.WARNING, "twofa.change_feed"):
            node = await Gateway.start(settings)
            try:
                assert node.change_feed is not None
                assert not await node.change_feed.wait_live(0.5)
                assert node.feed_state is not None
                assert not node.feed_state.report().live
                token = await signed_in(node)  # sign-ins go on
                assert await verdict(node.forward_auth, token) is Verdict.ALLOW
                session = await node.sessions.load(token)
                assert session is not None
                await node.sessions.end(session)  # its announcement fails, and says so
                assert await verdict(node.forward_auth, token) is Verdict.SIGN_IN
            finally:
                await node.close()
    assert "redis change feed unavailable" in caplog.text
    assert "could not tell the other gateway processes" in caplog.text


def test_every_process_of_one_database_file_finds_the_same_short_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / ("a-long-directory-name" * 8) / "twofa.db"
    found = feed_directory(database)
    monkeypatch.chdir(tmp_path)
    assert feed_directory(Path(database.relative_to(tmp_path))) == found
    assert len(str(found / f"{'0' * 16}-4194304{SUFFIX}")) < 100  # fits AF_UNIX's 107 bytes
    assert feed_directory(tmp_path / "other.db") != found


async def test_a_feed_directory_another_user_could_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with sqlite_database(tmp_path) as url:
        settings = node_settings(url, "local")
        assert settings.sqlite_file is not None
        directory = feed_directory(Path(settings.sqlite_file))
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o777)  # as if someone else had made it for everyone
        try:
            with caplog.at_level(logging.ERROR, "twofa.change_feed"):
                node = await Gateway.start(settings)
                try:
                    assert node.change_feed is not None
                    assert not await node.change_feed.wait_live(0.5)
                finally:
                    await node.close()
            assert "is not a private directory" in caplog.text
        finally:
            directory.chmod(0o700)

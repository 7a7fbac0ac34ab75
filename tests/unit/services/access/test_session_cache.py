"""Forward-auth's session cache (services.access.session_cache): a copy in use is read again in
the background before it runs out, so busy sessions never wait on the database. Without a live
change feed a copy older than a second is never answered; with one, a copy is answered until
the session would end by itself, the feed drops it, or the feed is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete

from twofa.clock import FrozenClock
from twofa.config import AccessSettings
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import ForwardAuthService
from twofa.services.access.session_cache import CHECK_SECONDS
from twofa.services.runtime import Gateway
from twofa.services.state.feed_state import FEED_TRUST_SECONDS, FeedState
from twofa.services.state.sessions import (
    SEEN_FLUSH_SECONDS,
    TOUCH_EVERY,
    Level,
    LiveSession,
    SessionService,
    SessionView,
)
from twofa.storage.repositories import Users
from twofa.storage.sessions import Sessions
from twofa.storage.tables import SessionRow


class ControlledSessions:
    """The real session service, counting reads; a read can be held open or made to fail."""

    def __init__(self, real: SessionService) -> None:
        self._real = real
        self.loads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False

    async def load_with_user(self, token: str | None) -> LiveSession | None:
        self.loads += 1
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database went away")
        return await self._real.load_with_user(token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def signed_in(gateway: Gateway) -> tuple[str, SessionView]:
    await gateway.accounts.add_user("carol", "carol-password-1", display_name="Carol")
    async with gateway.db.begin() as db:
        user = await Users(db).by_name("carol")
        assert user is not None
        _, anonymous = await gateway.sessions.open(NO_CLIENT)
        token, session = await gateway.sessions.promote(
            db, anonymous, user.id, Level.SIGNED_IN, NO_CLIENT, second_factor=True
        )
    return token, session


Made = list[ForwardAuthService]


@pytest.fixture
async def made() -> AsyncIterator[Made]:
    """The services a test made, closed before its gateway: a refresh still running when
    the test ends finishes instead of being cut off with its connection."""
    services: Made = []
    yield services
    for made_service in services:
        await made_service.close()


def service(
    gateway: Gateway,
    sessions: ControlledSessions,
    clock: FrozenClock,
    made: Made,
    feed: FeedState | None = None,
) -> Any:
    made.append(
        ForwardAuthService(
            gateway.db,
            sessions,  # type: ignore[arg-type]
            AccessSettings(domains=("app.example.test",)),
            clock=clock,
            feed=feed,
        )
    )
    return made[-1]


async def rig(
    gateway: Gateway, clock: FrozenClock, made: Made, feed: FeedState | None = None
) -> tuple[str, SessionView, ControlledSessions, Any]:
    """Carol signed in; forward-auth over counted reads of her session."""
    token, session = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    return token, session, sessions, service(gateway, sessions, clock, made, feed)


def live_feed(clock: FrozenClock) -> FeedState:
    feed = FeedState("local", clock, silence_limit_s=float("inf"))  # no heartbeat here
    feed.connected()
    return feed


async def test_a_fresh_entry_is_served_without_reading_again(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made)
    first = await forward_auth._signed_in(token)
    clock.advance(timedelta(seconds=0.3))
    second = await forward_auth._signed_in(token)
    assert first is not None
    assert first.username == "carol"
    assert first.second_factor
    assert second == first
    assert sessions.loads == 1


async def test_a_busy_session_is_refreshed_in_the_background_without_waiting(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made)
    await forward_auth._signed_in(token)
    sessions.release.clear()  # the database is slow from now on
    clock.advance(timedelta(seconds=0.7))
    answer = await asyncio.wait_for(forward_auth._signed_in(token), timeout=1)
    assert answer is not None  # answered from the cache
    assert answer.username == "carol"
    assert sessions.loads == 2  # and one refresh started
    await forward_auth._signed_in(token)
    assert sessions.loads == 2  # never two refreshes at once
    sessions.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    # 1.4 s after the first read, 0.7 s after the refresh began
    clock.advance(timedelta(seconds=0.7))
    assert await forward_auth._signed_in(token) is not None
    assert sessions.loads == 2  # the refreshed entry counts from its own read


async def test_without_a_live_feed_an_entry_older_than_a_second_is_never_served(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made)
    await forward_auth._signed_in(token)
    sessions.release.clear()
    clock.advance(timedelta(seconds=CHECK_SECONDS + 0.01))
    waiting = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # waits for the database instead of answering from the cache
    sessions.release.set()
    assert (await waiting) is not None


async def test_without_a_live_feed_a_session_ended_elsewhere_is_refused_after_a_second(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, session, _, forward_auth = await rig(gateway, clock, made)
    assert await forward_auth._signed_in(token) is not None
    async with gateway.db.begin() as db:  # not through the gateway: no message reaches it
        await db.execute(delete(SessionRow).where(SessionRow.id == session.id))
    clock.advance(timedelta(seconds=CHECK_SECONDS + 0.01))
    assert await forward_auth._signed_in(token) is None


async def test_with_a_live_feed_a_copy_in_use_is_answered_without_reading_again(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    await forward_auth._signed_in(token)
    for _ in range(8):  # four minutes of use, a request every 30 s
        clock.advance(timedelta(seconds=30))
        assert await forward_auth._signed_in(token) is not None
    assert sessions.loads == 1


async def test_with_a_live_feed_a_copy_is_read_again_within_the_trust_limit(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    """A message lost between another node's commit and its publish costs at most this."""
    token, _, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    await forward_auth._signed_in(token)
    steps = int(FEED_TRUST_SECONDS // 20) + 1
    for _ in range(steps):
        clock.advance(timedelta(seconds=20))
        await forward_auth._signed_in(token)
        await asyncio.sleep(0.01)  # a background read, when one starts, finishes
    assert sessions.loads >= 2


async def test_a_lost_feed_falls_back_to_reading_every_second(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    feed = live_feed(clock)
    token, _, sessions, forward_auth = await rig(gateway, clock, made, feed)
    await forward_auth._signed_in(token)
    clock.advance(timedelta(seconds=5))
    await forward_auth._signed_in(token)
    assert sessions.loads == 1

    feed.lost("connection reset")
    clock.advance(timedelta(seconds=CHECK_SECONDS + 0.01))
    await forward_auth._signed_in(token)
    assert sessions.loads == 2


async def test_copies_read_before_the_feed_dropped_are_not_trusted_once_it_is_back(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    """Messages sent while it was away are lost: what was read before may be out of date."""
    feed = live_feed(clock)
    token, _, sessions, forward_auth = await rig(gateway, clock, made, feed)
    await forward_auth._signed_in(token)
    feed.lost("connection reset")
    feed.connected()
    clock.advance(timedelta(seconds=CHECK_SECONDS + 0.01))
    await forward_auth._signed_in(token)
    assert sessions.loads == 2
    clock.advance(timedelta(seconds=60))  # read on the new connection: trusted again
    await forward_auth._signed_in(token)
    assert sessions.loads == 2


async def test_a_message_drops_the_copy_and_any_read_in_flight(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, session, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    await forward_auth._signed_in(token)
    forward_auth.cache.forget_session(session.id)
    sessions.release.clear()
    reading = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.01)
    forward_auth.cache.forget_user(session.user_id)  # the read began before the change
    sessions.release.set()
    await reading
    assert sessions.loads == 3  # the request that waited on it read again, after the change
    assert len(forward_auth.cache) == 0  # what the overtaken read found is not kept
    await forward_auth._signed_in(token)
    assert sessions.loads == 4


async def test_an_unused_session_ends_at_its_idle_window_even_with_a_live_feed(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    assert await forward_auth._signed_in(token) is not None
    clock.advance(timedelta(minutes=gateway.settings.session_idle_minutes, seconds=1))
    assert await forward_auth._signed_in(token) is None
    assert sessions.loads == 2  # read again, and found ended


async def test_a_session_in_use_from_memory_stays_alive_in_the_database(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    """Its use is written in batches, so another node reading it sees it alive."""
    token, session, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    await forward_auth._signed_in(token)
    minutes = gateway.settings.session_idle_minutes * 2
    for _ in range(minutes * 2):  # twice the idle window, a request every 30 s
        clock.advance(TOUCH_EVERY)
        assert await forward_auth._signed_in(token) is not None
        if sessions.loads > 1:
            break
    await asyncio.sleep(SEEN_FLUSH_SECONDS + 0.2)
    await gateway.sessions.flush_seen()
    async with gateway.db.begin() as db:
        stored = await Sessions(db).read(session.id)
    assert stored is not None
    assert stored.live(clock.now(), timedelta(minutes=gateway.settings.session_idle_minutes))
    assert stored.last_seen_at >= clock.now() - TOUCH_EVERY


async def test_a_failed_read_is_not_cached(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, made)
    sessions.fail_next = True
    with pytest.raises(RuntimeError, match="went away"):
        await forward_auth._signed_in(token)
    assert await forward_auth._signed_in(token) is not None
    assert sessions.loads == 2


async def test_closing_waits_for_a_refresh_in_flight_to_finish(
    gateway: Gateway, clock: FrozenClock
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, [])
    await forward_auth._signed_in(token)
    sessions.release.clear()
    clock.advance(timedelta(seconds=0.7))
    await forward_auth._signed_in(token)  # starts a refresh, held by the slow database
    (refresh,) = forward_auth.cache._loading.values()

    closing = asyncio.ensure_future(forward_auth.close(wait_seconds=30))
    await asyncio.sleep(0.05)
    assert not closing.done()  # still waiting for the read
    sessions.release.set()
    await closing
    assert refresh.done()
    assert not refresh.cancelled()  # it finished, not cut off
    assert refresh.result() is not None


async def test_closing_cancels_a_read_the_database_never_answers(
    gateway: Gateway, clock: FrozenClock
) -> None:
    token, _, sessions, forward_auth = await rig(gateway, clock, [])
    sessions.release.clear()  # the database never answers
    waiting = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.01)
    (read,) = forward_auth.cache._loading.values()

    await forward_auth.close(wait_seconds=0.1)

    assert read.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_feed_that_falls_silent_is_not_trusted_before_its_connection_notices(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    """A path cut without a reset: the connection still looks open, but nothing is heard."""
    feed = FeedState("redis", clock, silence_limit_s=1.0)
    feed.connected()
    token, _, sessions, forward_auth = await rig(gateway, clock, made, feed)
    await forward_auth._signed_in(token)
    clock.advance(timedelta(seconds=0.5))
    feed.heard()
    clock.advance(timedelta(seconds=0.9))
    await forward_auth._signed_in(token)
    assert sessions.loads == 1  # heard 0.9 s ago: trusted
    clock.advance(timedelta(seconds=0.2))
    assert feed.live_generation is None
    await forward_auth._signed_in(token)
    assert sessions.loads == 2  # silent 1.1 s: read again


async def test_a_read_a_sign_out_overtook_is_not_answered_to_those_waiting_on_it(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, session, sessions, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    sessions.release.clear()
    waiting = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.01)  # the read began: the session was still there
    await gateway.sessions.end(session)
    forward_auth.cache.forget_session(session.id)  # what the feed (or this process) does
    sessions.release.set()
    assert await waiting is None  # read again after the sign-out
    assert sessions.loads == 2


async def test_forgetting_a_user_drops_only_their_copies(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, session, _, forward_auth = await rig(gateway, clock, made, live_feed(clock))
    await forward_auth._signed_in(token)
    assert session.user_id is not None
    forward_auth.cache.forget_user(session.user_id + 1000)
    assert len(forward_auth.cache) == 1
    forward_auth.cache.forget_user(session.user_id)
    assert len(forward_auth.cache) == 0
    assert forward_auth.cache._keys_of_user == {}

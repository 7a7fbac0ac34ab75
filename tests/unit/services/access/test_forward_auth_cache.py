"""The forward-auth session cache: a session in use is re-read in the background before its
entry expires, so busy sessions never wait on the database, and an entry older than a second
is never served, so a revocation is seen within a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from twofa.clock import FrozenClock
from twofa.config import AccessSettings
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import CACHE_SECONDS, ForwardAuthService
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level, SessionService, SessionView
from twofa.storage.repositories import Users


class ControlledSessions:
    """Delegates to the real session service, counting loads; a load can be held open."""

    def __init__(self, real: SessionService) -> None:
        self._real = real
        self.loads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False

    async def load(self, token: str | None) -> SessionView | None:
        self.loads += 1
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database went away")
        return await self._real.load(token)


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


def service(gateway: Gateway, sessions: ControlledSessions, clock: FrozenClock, made: Made) -> Any:
    made.append(
        ForwardAuthService(
            gateway.db,
            sessions,  # type: ignore[arg-type]
            AccessSettings(domains=("app.example.test",)),
            clock=clock,
        )
    )
    return made[-1]


async def test_a_fresh_entry_is_served_without_reading_again(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, made)
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
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, made)
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


async def test_an_expired_entry_is_never_served(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, made)
    await forward_auth._signed_in(token)
    sessions.release.clear()
    clock.advance(timedelta(seconds=CACHE_SECONDS + 0.01))
    waiting = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # waits for the database instead of answering from the cache
    sessions.release.set()
    assert (await waiting) is not None


async def test_a_session_ended_meanwhile_is_refused_once_the_entry_expires(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, session = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, made)
    assert await forward_auth._signed_in(token) is not None
    await gateway.sessions.end(session)
    clock.advance(timedelta(seconds=CACHE_SECONDS + 0.01))
    assert await forward_auth._signed_in(token) is None


async def test_a_failed_read_is_not_cached(
    gateway: Gateway, clock: FrozenClock, made: Made
) -> None:
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, made)
    sessions.fail_next = True
    with pytest.raises(RuntimeError, match="went away"):
        await forward_auth._signed_in(token)
    assert await forward_auth._signed_in(token) is not None
    assert sessions.loads == 2


async def test_closing_waits_for_a_refresh_in_flight_to_finish(
    gateway: Gateway, clock: FrozenClock
) -> None:
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, [])
    await forward_auth._signed_in(token)
    sessions.release.clear()
    clock.advance(timedelta(seconds=0.7))
    await forward_auth._signed_in(token)  # starts a refresh, held by the slow database
    (refresh,) = forward_auth._loading.values()

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
    token, _ = await signed_in(gateway)
    sessions = ControlledSessions(gateway.sessions)
    forward_auth = service(gateway, sessions, clock, [])
    sessions.release.clear()  # the database never answers
    waiting = asyncio.ensure_future(forward_auth._signed_in(token))
    await asyncio.sleep(0.01)
    (read,) = forward_auth._loading.values()

    await forward_auth.close(wait_seconds=0.1)

    assert read.cancelled()
    with pytest.raises(asyncio.CancelledError):
        await waiting

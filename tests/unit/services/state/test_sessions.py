"""Server-side sessions: the cookie token is looked up by its digest, rotated at each privilege
change, and ends when idle too long or too old."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tests.unit.services.conftest import BROWSER, START, add_user
from twofa.clock import FrozenClock
from twofa.security.tokens import new_token, token_digest
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level, SessionView
from twofa.storage.sessions import Sessions
from twofa.storage.tables import SessionRow


async def signed_in(gateway: Gateway, level: Level = Level.SIGNED_IN) -> tuple[str, SessionView]:
    user_id = await add_user(gateway, "alice")
    _, anonymous = await gateway.sessions.open(BROWSER)
    async with gateway.db.begin() as db:
        return await gateway.sessions.promote(db, anonymous, user_id, level, BROWSER)


async def row_exists(gateway: Gateway, session_id: str) -> bool:
    async with gateway.db.begin() as db:
        return await Sessions(db).get(session_id) is not None


async def test_open_gives_an_anonymous_session_with_csrf_token(gateway: Gateway) -> None:
    token, view = await gateway.sessions.open(BROWSER, next_url="/jira")
    assert view.level is Level.ANONYMOUS
    assert view.user_id is None
    assert view.next_url == "/jira"
    assert len(view.csrf_token) >= 43
    assert view.id == token_digest(token)
    assert await gateway.sessions.load(token) == view


async def test_database_keeps_only_the_digest(gateway: Gateway) -> None:
    token, view = await gateway.sessions.open(BROWSER)
    async with gateway.db.begin() as db:
        assert await Sessions(db).get(token) is None
        row = await Sessions(db).get(view.id)
    assert row is not None
    assert row.client_ip == BROWSER.ip
    assert row.user_agent == BROWSER.user_agent


async def test_promote_rotates_the_token_and_deletes_the_old_session(gateway: Gateway) -> None:
    user_id = await add_user(gateway, "alice")
    old_token, anonymous = await gateway.sessions.open(BROWSER, next_url="/app")
    async with gateway.db.begin() as db:
        new_token_, promoted = await gateway.sessions.promote(
            db, anonymous, user_id, Level.AWAITING_SECOND_FACTOR, BROWSER
        )
    assert new_token_ != old_token
    assert promoted.id != anonymous.id
    assert promoted.csrf_token != anonymous.csrf_token
    assert promoted.level is Level.AWAITING_SECOND_FACTOR
    assert promoted.user_id == user_id
    assert promoted.next_url == "/app"
    assert await gateway.sessions.load(old_token) is None
    assert not await row_exists(gateway, anonymous.id)
    assert await gateway.sessions.load(new_token_) == promoted


async def test_idle_session_expires(gateway: Gateway, clock: FrozenClock) -> None:
    token, view = await signed_in(gateway)
    clock.advance(timedelta(minutes=29))
    assert await gateway.sessions.load(token) == view  # use keeps it alive …
    clock.advance(timedelta(minutes=29))
    assert await gateway.sessions.load(token) == view
    clock.advance(timedelta(minutes=30))  # … thirty idle minutes end it
    assert await gateway.sessions.load(token) is None
    assert not await row_exists(gateway, view.id)


async def test_signed_in_session_ends_after_absolute_lifetime(
    gateway: Gateway, clock: FrozenClock
) -> None:
    token, view = await signed_in(gateway)
    while clock.now() < START + timedelta(hours=11, minutes=40):
        clock.advance(timedelta(minutes=20))
        assert await gateway.sessions.load(token) == view
    clock.advance(timedelta(minutes=20))  # twelve hours after sign-in, however active
    assert await gateway.sessions.load(token) is None
    assert not await row_exists(gateway, view.id)


async def test_pending_login_ends_sooner_than_a_signed_in_session(
    gateway: Gateway, clock: FrozenClock
) -> None:
    token, _ = await signed_in(gateway, Level.AWAITING_SECOND_FACTOR)
    clock.advance(timedelta(minutes=14))
    assert await gateway.sessions.load(token) is not None
    clock.advance(timedelta(minutes=1))
    assert await gateway.sessions.load(token) is None


async def test_unknown_forged_or_missing_tokens_load_nothing(gateway: Gateway) -> None:
    token, view = await gateway.sessions.open(BROWSER)
    assert await gateway.sessions.load(None) is None
    assert await gateway.sessions.load("") is None
    assert await gateway.sessions.load(new_token()) is None
    assert await gateway.sessions.load(token[:-1]) is None
    assert await gateway.sessions.load(view.id) is None  # the digest is not a token


async def test_over_long_token_is_not_looked_up(gateway: Gateway) -> None:
    now = START
    for token in ("t" * 100, "t" * 101):
        async with gateway.db.begin() as db:
            await Sessions(db).add(
                SessionRow(
                    id=token_digest(token),
                    user_id=None,
                    level=0,
                    csrf_token="csrf",
                    next_url="/",
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(hours=1),
                )
            )
    assert await gateway.sessions.load("t" * 100) is not None
    assert await gateway.sessions.load("t" * 101) is None


async def test_end_removes_the_session(gateway: Gateway) -> None:
    token, view = await signed_in(gateway)
    await gateway.sessions.end(view)
    assert await gateway.sessions.load(token) is None


async def test_next_url_can_be_changed(gateway: Gateway) -> None:
    token, view = await gateway.sessions.open(BROWSER)
    await gateway.sessions.set_next_url(view, "/confluence")
    loaded = await gateway.sessions.load(token)
    assert loaded is not None
    assert loaded.next_url == "/confluence"


async def test_expired_sessions_are_swept(gateway: Gateway, clock: FrozenClock) -> None:
    stale, _ = await gateway.sessions.open(BROWSER)
    clock.advance(timedelta(minutes=16))
    fresh, _ = await gateway.sessions.open(BROWSER)  # opening a session sweeps expired ones
    async with gateway.db.begin() as db:
        remaining = (await db.scalars(select(SessionRow))).all()
        assert [row.id for row in remaining] == [token_digest(fresh)]
        now = clock.now()
        assert await Sessions(db).remove_expired(now, now - timedelta(hours=1), 2) == 0
    clock.advance(timedelta(minutes=1))
    assert await gateway.sessions.load(fresh) is not None
    assert await gateway.sessions.load(stale) is None

"""The express lane (services.express, web.express) on PostgreSQL: an authenticator-app sign-in
or step-up answered in three statements leaves exactly what the general path leaves (rows,
audit record, cookie, page), and everything else (a wrong or reused code, an expired page,
a lock-out, "remember this device", a racing second answer, an odd form) is handed to the
general path, which answers as it always has."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_for
from tests.support.databases import postgres_database
from tests.support.gateway import csrf_from, gateway_settings, seed_users, sign_in
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.servers import free_port, serve_in_thread
from tests.support.totp_flow import challenge_from, enrol_alice, post_code, sign_out
from tests.support.two_factor import allow_methods
from twofa.clock import FrozenClock
from twofa.config import Settings
from twofa.methods.totp import time_step
from twofa.security.tokens import token_digest
from twofa.services.change_feed import RedisChangeFeed
from twofa.services.express import ExpressCounts
from twofa.services.runtime import Gateway
from twofa.storage.express import ExpressStore, ExpressUnavailable, SessionWindow
from twofa.storage.tables import (
    AuditRow,
    ChallengeRow,
    CredentialRow,
    SessionRow,
    ThrottleRow,
    UserRow,
)
from twofa.web.app import create_app

pytestmark = pytest.mark.integration
WRONG = "That code didn't work. Check it and try again."
VERIFY = "/2fa/m/totp"


@dataclass
class Site:
    browser: httpx.AsyncClient
    settings: Settings
    counts: ExpressCounts | None  # None: the lane is switched off
    clock: FrozenClock

    def fresh_code(self, secret: str) -> str:
        """A code of a step no earlier answer used: the gateway's clock moves two steps on
        (set-up used the step of the real time, which may be one past the clock's)."""
        self.clock.advance(timedelta(seconds=60))
        return code_for(secret, time_step(self.clock.now()))


@asynccontextmanager
async def site(
    simulator: RunningSimulator, *, express: bool = True, **extra: Any
) -> AsyncIterator[Site]:
    async with postgres_database() as url:
        port = free_port()
        settings = gateway_settings(url, simulator, port, extra={"express_lane": express, **extra})
        await seed_users(settings)
        await allow_methods(
            settings, ("totp", "backup_codes"), first_method="totp", remember_device_days=30
        )
        clock = FrozenClock(datetime.now(UTC))
        app = create_app(settings, clock=clock)
        with serve_in_thread(app, port=port) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as browser:
                lane = app.state.gateway.express
                counts = lane.counts if lane is not None else None
                yield Site(browser, settings, counts, clock)


@pytest.fixture
async def alice(simulator: RunningSimulator) -> AsyncIterator[tuple[Site, str]]:
    """Alice with the app set up (through the general path), signed out again."""
    async with site(simulator) as running:
        secret = await enrol_alice(running.browser)
        await sign_out(running.browser)
        yield running, secret


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction on the site's database, from outside the running gateway."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            yield db
    finally:
        await gateway.close()


async def rows(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """What a sign-in leaves in the database, without what differs by nature between two runs
    (ids, random tokens, times), but with how the times relate."""
    async with database(settings) as db:
        sessions = (await db.scalars(select(SessionRow).order_by(SessionRow.level))).all()
        challenges = (
            await db.scalars(select(ChallengeRow).order_by(ChallengeRow.created_at))
        ).all()
        credentials = (await db.scalars(select(CredentialRow))).all()
        audit = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).all()
        throttle = (await db.scalars(select(ThrottleRow))).all()
    return {
        "sessions": [
            {
                "level": s.level,
                "user": s.user_id,
                "next_url": s.next_url,
                "client": (s.client_ip, s.user_agent),
                "lifetime": s.expires_at - s.created_at,
                "seen_at_start": s.last_seen_at == s.created_at,
                # (the general path reads the clock twice: microseconds apart)
                "second_factor_at_start": s.second_factor_at is not None
                and abs(s.second_factor_at - s.created_at) < timedelta(seconds=1),
            }
            for s in sessions
        ],
        "challenges": [
            {
                "method": c.method,
                "purpose": c.purpose,
                "status": c.status,
                "used": c.consumed_at is not None,
                "payload": c.payload if c.consumed_at is not None else sorted(c.payload or {}),
                "lifetime": c.expires_at - c.created_at,
            }
            for c in challenges
        ],
        "credentials": [
            {
                "method": c.method,
                "state_keys": sorted(c.state),
                "version": c.version,
                "used": c.last_used_at is not None,
            }
            for c in credentials
        ],
        "audit": [
            (a.kind, a.outcome, a.username, a.client_ip, a.user_agent, a.detail) for a in audit
        ],
        "throttle": [(t.key, t.failures) for t in throttle],
    }


def answer_form(page: httpx.Response, code: str) -> dict[str, str]:
    """What the page's form posts with `code` typed in."""
    return {
        "csrf_token": csrf_from(page.text),
        "challenge": challenge_from(page.text),
        "code": code,
    }


def without_tokens(html: str) -> str:
    return re.sub(r'value="[A-Za-z0-9_\-]{20,}"', 'value="…"', html)


async def sign_in_with_code(running: Site, code: str) -> httpx.Response:
    await sign_in(running.browser, "alice")
    assert (await running.browser.get("/2fa")).headers["location"] == VERIFY
    return await post_code(running.browser, VERIFY, code)


async def test_a_sign_in_leaves_exactly_what_the_general_path_leaves(
    simulator: RunningSimulator,
) -> None:
    outcomes = {}
    for express in (True, False):
        async with site(simulator, express=express) as running:
            secret = await enrol_alice(running.browser)
            await sign_out(running.browser)
            await sign_in(running.browser, "alice")
            page = await running.browser.get(VERIFY)
            answer = await running.browser.post(
                VERIFY,
                data=answer_form(page, running.fresh_code(secret)),
            )
            cookie = answer.headers["set-cookie"]
            outcomes[express] = (
                answer.status_code,
                answer.headers["location"],
                re.sub(r"twofa_session=[^;]+", "twofa_session=…", cookie),
                without_tokens(page.text),
                {k: v for k, v in page.headers.items() if k not in ("date", "content-length")},
                await rows(running.settings),
                running.counts,
            )
    on, off = outcomes[True], outcomes[False]
    assert on[6] == ExpressCounts(pages=1, sign_ins=1, handed_on=0)  # the lane did answer
    assert off[6] is None
    for table, left in on[5].items():
        assert left == off[5][table], table
    assert on[:5] == off[:5]
    assert on[0] == 303
    assert on[1] == "/2fa/after"


async def test_a_step_up_goes_the_express_way_and_says_so_in_the_audit(
    alice: tuple[Site, str],
) -> None:
    running, secret = alice
    assert (await sign_in_with_code(running, running.fresh_code(secret))).status_code == 303
    # Signed in: confirming with a code again (as My 2FA asks before a sensitive change).
    confirmed = await post_code(running.browser, VERIFY, running.fresh_code(secret))
    assert confirmed.status_code == 303
    assert running.counts == ExpressCounts(pages=2, sign_ins=2, handed_on=0)
    audit = (await rows(running.settings))["audit"]
    allows = [entry[5] for entry in audit if entry[:2] == ("second_factor", "allow")]
    assert allows[-2:] == [
        {"method": "totp", "step_up": False},
        {"method": "totp", "step_up": True},
    ]


async def test_a_wrong_code_is_handed_on_counted_and_refused_as_before(
    alice: tuple[Site, str],
) -> None:
    running, secret = alice
    await sign_in(running.browser, "alice")
    refused = await post_code(running.browser, VERIFY, "000000")
    assert refused.status_code == 401
    assert WRONG in unescape(refused.text)
    assert running.counts is not None
    assert running.counts.handed_on == 1
    state = await rows(running.settings)
    # Counted before the lane checked it, and again before the general path did.
    assert state["throttle"] == [("2fa-totp:alice", 2)]
    assert ("second_factor", "refused") in [entry[:2] for entry in state["audit"]]
    # The page the general path showed again takes the right code, and resets the counter.
    again = await running.browser.post(
        VERIFY,
        data=answer_form(refused, running.fresh_code(secret)),
    )
    assert again.status_code == 303
    assert (await rows(running.settings))["throttle"] == []


async def test_a_used_step_and_a_used_page_are_refused(alice: tuple[Site, str]) -> None:
    running, secret = alice
    code = running.fresh_code(secret)
    assert (await sign_in_with_code(running, code)).status_code == 303
    await sign_out(running.browser)
    reused = await sign_in_with_code(running, code)  # the same step again
    assert reused.status_code == 401
    assert WRONG in unescape(reused.text)

    page = await running.browser.get(VERIFY)
    form = answer_form(page, running.fresh_code(secret))
    assert (await running.browser.post(VERIFY, data=form)).status_code == 303
    # The same page again, with the new session's form token (signed in now: a step-up).
    home = await running.browser.get("/")
    replayed = await running.browser.post(VERIFY, data={**form, "csrf_token": csrf_from(home.text)})
    assert replayed.status_code == 400
    assert "expired or was already used" in unescape(replayed.text)


async def test_remember_this_device_goes_the_general_way(alice: tuple[Site, str]) -> None:
    running, secret = alice
    await sign_in(running.browser, "alice")
    answer = await post_code(running.browser, VERIFY, running.fresh_code(secret), remember="on")
    assert answer.status_code == 303
    assert "twofa_device=" in answer.headers.get("set-cookie", "")
    assert running.counts == ExpressCounts(pages=1, sign_ins=0, handed_on=0)  # never asked


async def test_a_lock_out_is_the_general_path_s_answer(alice: tuple[Site, str]) -> None:
    """A wrong code through the lane counts twice (the lane's attempt, then the general
    path's), so the third locks; the attempt at the limit the lane gives back unchecked, and
    the general path checks it, refuses it and audits the lock-out."""
    running, _secret = alice
    await sign_in(running.browser, "alice")
    for _ in range(3):
        refused = await post_code(running.browser, VERIFY, "000000")
        assert WRONG in unescape(refused.text)
    locked = await running.browser.get(VERIFY)
    assert locked.status_code == 400
    assert "Too many failed attempts" in unescape(locked.text)
    page_counts = running.counts
    assert page_counts is not None
    assert page_counts.pages == 3
    audit = (await rows(running.settings))["audit"]
    assert [entry[:2] for entry in audit].count(("second_factor", "refused")) == 3
    assert [entry[:2] for entry in audit].count(("lockout", "locked")) == 1


async def test_two_answers_racing_with_one_code_sign_in_once(alice: tuple[Site, str]) -> None:
    """Two tabs, two pages, the same code posted at the same moment: the step is spent once."""
    running, secret = alice
    await sign_in(running.browser, "alice")
    pages = [await running.browser.get(VERIFY) for _ in range(2)]
    code = running.fresh_code(secret)
    answers = await asyncio.gather(
        *(
            running.browser.post(
                VERIFY,
                data=answer_form(page, code),
            )
            for page in pages
        )
    )
    # One lands signed in; the other finds its session replaced (or the step spent).
    landed = [answer.headers.get("location") for answer in answers]
    assert landed.count("/2fa/after") == 1, landed
    allows = [
        e for e in (await rows(running.settings))["audit"] if e[:2] == ("second_factor", "allow")
    ]
    assert len(allows) == 2  # the set-up's sign-in, and one of these


@pytest.mark.parametrize(
    ("extra_headers", "body"),
    [
        ({"content-type": "application/json"}, '{"code": "123456"}'),
        ({"content-type": "application/x-www-form-urlencoded"}, "code=1&code=2"),
        ({"content-type": "application/x-www-form-urlencoded"}, "x=" + "a" * 20_000),
    ],
    ids=["json", "a-field-twice", "oversized"],
)
async def test_a_form_the_lane_does_not_expect_gets_the_general_answer(
    alice: tuple[Site, str], extra_headers: dict[str, str], body: str
) -> None:
    running, _ = alice
    await sign_in(running.browser, "alice")
    answer = await running.browser.post(VERIFY, content=body, headers=extra_headers)
    assert answer.status_code == 403  # no CSRF token where the general path reads it
    assert running.counts == ExpressCounts()


async def test_a_disabled_user_cannot_answer(alice: tuple[Site, str]) -> None:
    running, secret = alice
    await sign_in(running.browser, "alice")
    page = await running.browser.get(VERIFY)
    async with database(running.settings) as db:
        user = (await db.scalars(select(UserRow).where(UserRow.username == "alice"))).one()
        user.enabled = False
    answer = await running.browser.post(
        VERIFY,
        data=answer_form(page, running.fresh_code(secret)),
    )
    assert answer.status_code != 303
    assert running.counts is not None
    assert running.counts.sign_ins == 0


async def test_an_answer_reaching_another_worker_reads_what_it_needs(
    simulator: RunningSimulator,
) -> None:
    """The page from one gateway process, the answer to another (as with several workers or
    nodes): the second has not kept the page's context, reads it, and signs in."""
    async with site(simulator) as first:
        secret = await enrol_alice(first.browser)
        await sign_out(first.browser)
        port = free_port()
        settings = first.settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
        other = create_app(settings, clock=first.clock)
        with serve_in_thread(other, port=port) as other_url:
            await sign_in(first.browser, "alice")
            page = await first.browser.get(VERIFY)
            answer = await first.browser.post(
                f"{other_url}{VERIFY}",
                data=answer_form(page, first.fresh_code(secret)),
            )
            assert answer.status_code == 303, answer.text
            assert answer.headers["location"] == "/2fa/after"
            assert other.state.gateway.express.counts == ExpressCounts(sign_ins=1)


async def test_a_lock_out_after_the_page_opened_still_refuses(alice: tuple[Site, str]) -> None:
    """The answer's write checks the lock-out itself, not only the page's opening."""
    running, secret = alice
    await sign_in(running.browser, "alice")
    page = await running.browser.get(VERIFY)
    async with database(running.settings) as db:
        db.add(
            ThrottleRow(
                key="2fa-totp:alice",
                failures=0,
                window_started_at=running.clock.now(),
                locked_until=running.clock.now() + timedelta(minutes=15),
            )
        )
    answer = await running.browser.post(
        VERIFY,
        data=answer_form(page, running.fresh_code(secret)),
    )
    assert answer.status_code == 401
    assert "Too many failed attempts" in unescape(answer.text)
    assert running.counts == ExpressCounts(pages=1, sign_ins=0, handed_on=1)


async def test_sqlite_has_no_express_lane(tmp_path: Path) -> None:
    assert await ExpressStore.open(f"sqlite+aiosqlite:///{tmp_path / 'twofa.db'}") is None


async def test_when_the_lane_cannot_reach_its_database_the_general_path_answers(
    alice: tuple[Site, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane's own connections failing must not fail the sign-in: the general path, with
    its own connections, answers as it always has."""
    running, secret = alice

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ExpressUnavailable("ConnectionRefusedError: the lane's connection was refused")

    monkeypatch.setattr(ExpressStore, "open_challenge", unreachable)
    monkeypatch.setattr(ExpressStore, "read_answer", unreachable)
    await sign_in(running.browser, "alice")
    answer = await post_code(running.browser, VERIFY, running.fresh_code(secret))
    assert answer.status_code == 303
    assert answer.headers["location"] == "/2fa/after"
    assert running.counts == ExpressCounts(pages=0, sign_ins=0, handed_on=2)


async def test_a_store_that_cannot_connect_says_so_in_its_own_terms() -> None:
    store = await ExpressStore.open("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    assert store is not None
    now = datetime.now(UTC)
    window = SessionWindow(now, now, now, (1,))
    try:
        with pytest.raises(ExpressUnavailable, match=r"ConnectionRefusedError"):
            await store.read_answer("session", "challenge", window, "totp", "")
    finally:
        await store.close()


async def test_the_session_the_lane_replaces_is_announced_to_other_processes(
    simulator: RunningSimulator,
) -> None:
    """The lane rotates the session outside the ORM, so it announces the old one itself."""
    redis_url, channel, heard = await reachable_redis(), own_channel(), []
    listener = RedisChangeFeed(redis_url, heard.append, channel)
    listener.start()
    try:
        async with site(simulator, redis_url=redis_url, redis_channel=channel) as running:
            secret = await enrol_alice(running.browser)
            await sign_out(running.browser)
            assert await listener.wait_subscribed(5)
            heard.clear()
            await sign_in(running.browser, "alice")
            password_session = token_digest(running.browser.cookies["twofa_session"])

            answer = await post_code(running.browser, VERIFY, running.fresh_code(secret))

            assert answer.status_code == 303
            assert running.counts is not None
            assert running.counts.sign_ins == 1  # the lane answered

            async def announced() -> bool:
                return any(password_session in c.ended_sessions for c in heard)

            for _ in range(100):
                if await announced():
                    break
                await asyncio.sleep(0.02)
            assert await announced()
    finally:
        await listener.close()

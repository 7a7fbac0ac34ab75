"""What the attack tests on session revocation (tests/integration/test_session_revocation_attacks)
share: gateway nodes in the test's process whose paths to Redis or PostgreSQL can go through a
`tcp_proxy`, a signed-in session, and a watch that asks a node over and over whether it still
lets a session in, noting the last moment it did.

The promise under attack (issue 16): after a session ends anywhere, no node answers 200 for it
more than a second later while its change feed is live, and a node without a live feed reads
again every second. A check that breaks it raises `PromiseBroken`, so an attack test marked
`xfail(raises=PromiseBroken)` fails for that reason only, never for a set-up that went wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, seed_users
from tests.support.servers import free_port
from twofa.clock import Clock
from twofa.config import Settings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.services.access.forward_auth import ForwardAuthService, OriginalRequest, Verdict
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginResult
from twofa.services.state.feed_state import FeedState

APP = "app.example.test"
WIKI = OriginalRequest("https", APP, "/wiki/Home", "192.0.2.10")
READERS_ONLY = OriginalRequest("https", APP, "/library/shelf", "192.0.2.10")
PROMISE_S = 1.0


class PromiseBroken(AssertionError):
    """A node let an ended session in more than a second after it ended."""


def node_settings(
    database_url: str, feed: str, *, redis_url: str | None = None, channel: str = "", **extra: Any
) -> Settings:
    redis: dict[str, Any] = {"redis_url": redis_url, "redis_channel": channel} if redis_url else {}
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://127.0.0.1:{free_port()}",
        change_feed=feed,
        access={
            "domains": [APP],
            "rules": [
                {
                    "domain": APP,
                    "resources": ["/library/*"],
                    "groups": ["readers"],
                    "policy": "one_factor",
                },
                {"domain": APP, "resources": ["/library/*"], "policy": "deny"},
                {"domain": APP, "policy": "one_factor"},
            ],
        },
        **redis,
        **extra,
    )


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "postgresql":
        async with postgres_database() as url:
            yield url
    else:
        async with sqlite_database(tmp_path) as url:
            yield url


@asynccontextmanager
async def started(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Gateway]:
    node = await Gateway.start(settings, clock=clock)
    try:
        yield node
    finally:
        await node.close()


async def signed_in(node: Gateway, username: str = "bob") -> str:
    _, anonymous = await node.sessions.open(NO_CLIENT)
    outcome = await node.login.sign_in(anonymous, username, PASSWORDS[username], NO_CLIENT)
    assert outcome.result is LoginResult.SIGNED_IN, outcome
    assert outcome.token is not None
    return outcome.token


async def sign_out(node: Gateway, token: str) -> float:
    """Ends the session as /logout does; the loop time right after the commit."""
    session = await node.sessions.load(token)
    assert session is not None, "the session was not live before the sign-out"
    await node.sessions.end(session)
    return asyncio.get_running_loop().time()


async def verdict(
    forward_auth: ForwardAuthService,
    token: str,
    url: OriginalRequest = WIKI,
    within_s: float = 0.3,
) -> Verdict | None:
    """The node's answer, or None when it gives none in time (a read stalled on its path)."""
    try:
        return (await asyncio.wait_for(forward_auth.check(token, url), within_s)).verdict
    except TimeoutError:
        return None


LetIn = Callable[[], Awaitable[bool]]


def lets_in(node: Gateway, token: str, url: OriginalRequest = WIKI) -> LetIn:
    async def check() -> bool:
        return await verdict(node.forward_auth, token, url) is Verdict.ALLOW

    return check


@dataclass
class Watch:
    """What a node answered for a session from `since` on (loop times)."""

    since: float
    allowed: int = 0
    refused: int = 0
    last_allowed: float | None = None  # seconds after `since`

    def keep_promise(self, what: str, limit_s: float = PROMISE_S) -> None:
        if self.last_allowed is not None and self.last_allowed > limit_s:
            raise PromiseBroken(
                f"{what}: still let in {self.last_allowed:.2f} s after it ended "
                f"({self.allowed} answers of 200 after the end, {self.refused} refusals)"
            )


async def watch(check: LetIn, since: float, until_s: float, step_s: float = 0.005) -> Watch:
    """Asks `check` over and over until `until_s` after `since`."""
    loop = asyncio.get_running_loop()
    seen = Watch(since)
    while loop.time() - since < until_s:
        if await check():
            seen.allowed += 1
            seen.last_allowed = loop.time() - since
        else:
            seen.refused += 1
        await asyncio.sleep(step_s)
    return seen


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], within_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        found = check()
        if isinstance(found, Awaitable):
            found = await found
        if found:
            return True
        await asyncio.sleep(0.01)
    return False


async def all_live(*nodes: Gateway) -> None:
    """Every node hears the others (as far as its feed can tell)."""
    for node in nodes:
        assert node.change_feed is not None, "the node has no change feed"
        assert await node.change_feed.wait_live(5), "the node's feed never connected"


def state_of(node: Gateway) -> FeedState:
    assert node.feed_state is not None
    return node.feed_state


def feed_live(node: Gateway) -> Callable[[], bool]:
    return lambda: node.feed_state is not None and node.feed_state.live_generation is not None


def generation_after(node: Gateway, generation: int | None) -> Callable[[], bool]:
    """Whether the node's feed is live on a newer connection than `generation` (it took the
    old one for lost, so nothing read before is trusted long again)."""

    def check() -> bool:
        now = node.feed_state.live_generation if node.feed_state else None
        return now is not None and generation is not None and now > generation

    return check


async def seeded(settings: Settings) -> Settings:
    await seed_users(settings)
    return settings

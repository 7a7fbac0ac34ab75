"""Tells the other gateway processes at once what changed: a session ended or a user changed
(forward-auth drops its copies), console settings or access rules saved (their caches reload).
Three feeds, one chosen at start (`services.runtime`): Redis publish/subscribe when
`redis_url` is set (this module); PostgreSQL's LISTEN/NOTIFY without Redis
(`postgres_feed`); between the processes of one machine on SQLite (`local_feed`).

The database stays the only source of truth. A message can only make a process forget what
it cached, never let anyone in; it carries HMACs of the gateway's secret keys (`feed_keys`), so a
forged one is dropped for the price of one HMAC, and a replayed one costs a read. A lost one is
what the feed's state is for (`feed_state`): while a feed is not live, caches fall back to
reading every second; each feed reconnects by itself, logging loudly while it cannot.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from twofa.clock import SystemClock
from twofa.services.state.feed_keys import FeedKeys
from twofa.services.state.feed_state import (
    HEARTBEAT_S,
    SILENCE_LIMIT_S,
    FeedState,
)
from twofa.services.state.occasional_log import OccasionalLog
from twofa.storage.change_notes import Changes

DEFAULT_CHANNEL: Final = "twofa:changes"
CONNECT_TIMEOUT_S: Final = 2.0
# A Redis that accepts and then stalls must not hold a publish (or a shutdown waiting for it)
# forever; the listener asks with its own 1 s timeout, well inside this.
COMMAND_TIMEOUT_S: Final = 5.0
RETRY_CAP_S: Final = 5.0
CLOSE_WAIT_S: Final = 2.0
LOG_EVERY_S: Final = 10.0  # what can repeat many times a second is said once per this
PUBLISH_RETRIES_S: Final = (0.1, 0.3, 0.0)  # the pause after each try

SESSIONS_PER_MESSAGE: Final = 60  # 67 bytes each in JSON: 4 kB
USERS_PER_MESSAGE: Final = 100  # of each kind, up to 12 bytes each: 2.4 kB
log = logging.getLogger("twofa.change_feed")


def encoded(changes: Changes, node: str) -> str:
    return json.dumps(
        {
            "node": node,
            "sessions": sorted(changes.ended_sessions),
            "users": sorted(changes.ended_users),
            "settings": changes.settings,
            "access_rules": changes.access_rules,
            "changed_users": sorted(changes.changed_users),
        }
    )


def _user_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(u, int) and not isinstance(u, bool) for u in value
    )


def decoded(raw: bytes | str) -> tuple[str, Changes] | None:
    """The sender and its changes, or None for anything that is not one of our messages."""
    try:
        message: Any = json.loads(raw)
        node, sessions, users = message["node"], message["sessions"], message["users"]
        settings, rules = message["settings"], message["access_rules"]
        changed = message.get("changed_users", [])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    well_formed = (
        isinstance(node, str)
        and isinstance(sessions, list)
        and all(isinstance(s, str) for s in sessions)
        and _user_ids(users)
        and _user_ids(changed)
        and isinstance(settings, bool)
        and isinstance(rules, bool)
    )
    if not well_formed:
        return None
    changes = Changes(frozenset(sessions), frozenset(users), settings, rules, frozenset(changed))
    return node, changes


def batches(changes: Changes, scale: int = 1) -> list[Changes]:
    """`changes` cut into messages of at most about 6 kB each (PostgreSQL's NOTIFY refuses
    8,000 bytes), or `scale` times that (a local datagram takes 64 kB)."""
    per_session, per_user = SESSIONS_PER_MESSAGE * scale, USERS_PER_MESSAGE * scale
    sessions = sorted(changes.ended_sessions)
    ended, changed = sorted(changes.ended_users), sorted(changes.changed_users)
    found: list[Changes] = []
    for index in itertools.count():
        s, u = index * per_session, index * per_user
        batch = Changes(
            frozenset(sessions[s : s + per_session]),
            frozenset(ended[u : u + per_user]),
            changes.settings and index == 0,
            changes.access_rules and index == 0,
            frozenset(changed[u : u + per_user]),
        )
        if not batch:
            break
        found.append(batch)
    return found


async def within(seconds: float, work: Awaitable[Any], what: str) -> None:
    """Waits for `work` at most `seconds`: a shutdown must end even when a connection in a
    bad state would hold it. What it raises is the feed's loss, logged already."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("%s took longer than %.0f s: given up", what, seconds)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("%s failed: %s", what, task.exception())


class ChangeFeed(ABC):
    """One connection that hears the others, kept up by `_listen`: `_follow` connects, marks
    the state live once it hears, and applies messages until the connection fails."""

    kind: str = "none"

    def __init__(
        self, on_change: Callable[[Changes], None], state: FeedState | None, keys: FeedKeys
    ) -> None:
        """`on_change` gets what other processes changed (never this one's own: it applied
        them already), in the event loop, and must not block. `keys` sign what this process
        sends and check what it hears (services.state.feed_keys)."""
        self._on_change = on_change
        self._keys = keys
        self.state = state or FeedState(self.kind, SystemClock())
        self.node = secrets.token_hex(8)
        self._listening: asyncio.Task[None] | None = None
        # A flood must not cost a log line each.
        self._ignored = OccasionalLog(log, logging.WARNING, LOG_EVERY_S, time.monotonic)

    def start(self) -> None:
        self._listening = asyncio.create_task(self._listen())

    async def wait_live(self, timeout_s: float) -> bool:
        """True once this process hears the others (tests wait for it; serving does not)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.state.live_generation is None:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    @abstractmethod
    def announce(self, changes: Changes) -> None:
        """Called right after a commit (storage.change_notes); must not block."""

    @abstractmethod
    async def _follow(self) -> None: ...

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            await within(CLOSE_WAIT_S, self._listening, f"closing the {self.kind} feed")
        self.state.lost("closed")

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            generation = self.state.generation
            try:
                await self._follow()
            except Exception as exc:  # each driver has its own error family; never stop
                if self.state.generation != generation:
                    delay = 0.5  # it was live on this try: try again soon
                self._lost(exc, delay)
            self.state.lost("reconnecting")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_S)

    def _lost(self, exc: BaseException, delay: float) -> None:
        self.state.lost(f"{type(exc).__name__}: {exc}")
        log.error(
            "%s change feed unavailable (%s): caches read the database every second until "
            "it is back; retrying in %.1f s",
            self.kind,
            exc,
            delay,
        )

    def _sealed(self, changes: Changes) -> str:
        return self._keys.sealed(encoded(changes, self.node))

    def _heard(self, raw: bytes | str, where: str) -> None:
        self.state.heard()
        body = self._keys.opened(raw)
        found = decoded(body) if body is not None else None
        if found is None:
            self._ignored.say(
                "ignored a message on %s that is not twofa's (or not signed with this "
                "gateway's secret key)",
                where,
            )
        elif found[0] != self.node:
            try:
                self._on_change(found[1])
            except Exception:  # one bad handler must not stop the feed
                log.exception("applying a change from another gateway process failed")


class RedisChangeFeed(ChangeFeed):
    kind = "redis"

    def __init__(
        self,
        url: str,
        on_change: Callable[[Changes], None],
        channel: str = DEFAULT_CHANNEL,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        state: FeedState | None = None,
        *,
        keys: FeedKeys,
    ) -> None:
        super().__init__(on_change, state, keys)
        self._redis = Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=command_timeout_s
        )
        self._channel = channel
        self._publishing: set[asyncio.Task[None]] = set()
        # Redis away under load fails every commit's publish: one line per interval says it.
        self._unsent = OccasionalLog(log, logging.WARNING, LOG_EVERY_S, time.monotonic)

    def announce(self, changes: Changes) -> None:
        """Sends in the background, so the request that committed never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._publish(self._sealed(changes)))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def close(self) -> None:
        await super().close()
        await within(CLOSE_WAIT_S, asyncio.gather(*self._publishing), "the last publishes")
        await within(CLOSE_WAIT_S, self._redis.aclose(), "closing the Redis connections")

    async def _publish(self, payload: str) -> None:
        for pause in PUBLISH_RETRIES_S:
            try:
                await self._redis.publish(self._channel, payload)
                return
            except (RedisError, OSError) as exc:
                problem = exc
            await asyncio.sleep(pause)
        self._unsent.say(
            "could not tell the other gateway processes of a change through Redis (%s): "
            "they hear it through the database's change outbox instead, within about a second",
            problem,
        )

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            # Live only once Redis confirms the subscription: a message published before it
            # would not reach this process.
            deadline = loop.time() + CONNECT_TIMEOUT_S
            while True:
                message = await pubsub.get_message(timeout=HEARTBEAT_S)
                if message is not None and message.get("type") == "subscribe":
                    break
                if loop.time() > deadline:
                    raise ConnectionError("Redis did not confirm the subscription")
            self.state.connected()
            heard_at = pinged_at = loop.time()
            while True:
                asked_at = loop.time()
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=HEARTBEAT_S
                )
                now = loop.time()
                # Time this process was not listening (its event loop held up by a burst of
                # work, a stop of the machine) is not Redis's silence: its answers may be
                # waiting in the socket, read on the next turn.
                heard_at += max(0.0, now - asked_at - 2 * HEARTBEAT_S)
                if message is not None:
                    heard_at = now
                    if message.get("type") == "message":
                        self._heard(message["data"], self._channel)
                    else:
                        self.state.heard()  # a pong
                if now - heard_at > SILENCE_LIMIT_S:
                    raise ConnectionError(f"no word from Redis for {SILENCE_LIMIT_S:.0f} s")
                if now - pinged_at >= HEARTBEAT_S:  # whatever the traffic: a flood is no pong
                    pinged_at = now
                    await pubsub.ping()

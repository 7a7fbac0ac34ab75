"""Tells the other gateway processes at once what changed, through Redis publish/subscribe,
when `redis_url` is set: a session ended (forward-auth drops its cached copy), console
settings or access rules saved (their caches reload). Without it every process still follows
within about a second, since each cache rechecks the database that often; with it they follow
within a message's flight.

The database stays the only source of truth. A message can only make a process forget what
it cached, never let anyone in, so a forged or lost one costs at most a database read or that
second. Redis down is logged loudly and retried; sign-ins go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from twofa.storage.change_notes import Changes

DEFAULT_CHANNEL: Final = "twofa:changes"
CONNECT_TIMEOUT_S: Final = 2.0
# A Redis that accepts and then stalls must not hold a publish (or a shutdown waiting for it)
# forever; the listener asks with its own 1 s timeout, well inside this.
COMMAND_TIMEOUT_S: Final = 5.0
RETRY_CAP_S: Final = 5.0
log = logging.getLogger("twofa.change_feed")


def encoded(changes: Changes, node: str) -> str:
    return json.dumps(
        {
            "node": node,
            "sessions": sorted(changes.ended_sessions),
            "users": sorted(changes.ended_users),
            "settings": changes.settings,
            "access_rules": changes.access_rules,
        }
    )


def decoded(raw: bytes | str) -> tuple[str, Changes] | None:
    """The sender and its changes, or None for anything that is not one of our messages."""
    try:
        message: Any = json.loads(raw)
        node, sessions, users = message["node"], message["sessions"], message["users"]
        settings, rules = message["settings"], message["access_rules"]
    except (ValueError, TypeError, KeyError):
        return None
    well_formed = (
        isinstance(node, str)
        and isinstance(sessions, list)
        and all(isinstance(s, str) for s in sessions)
        and isinstance(users, list)
        and all(isinstance(u, int) and not isinstance(u, bool) for u in users)
        and isinstance(settings, bool)
        and isinstance(rules, bool)
    )
    if not well_formed:
        return None
    return node, Changes(frozenset(sessions), frozenset(users), settings, rules)


class RedisChangeFeed:
    def __init__(
        self,
        url: str,
        on_change: Callable[[Changes], None],
        channel: str = DEFAULT_CHANNEL,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        """`on_change` gets what other processes changed (never this one's own: it applied
        them already), in the event loop, and must not block."""
        self._redis = Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=command_timeout_s
        )
        self._on_change = on_change
        self._channel = channel
        self._node = secrets.token_hex(8)
        self._publishing: set[asyncio.Task[None]] = set()
        self._listening: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def start(self) -> None:
        self._listening = asyncio.create_task(self._listen())

    async def wait_subscribed(self, timeout_s: float) -> bool:
        """True once this process hears the channel (tests wait for it; serving does not)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def announce(self, changes: Changes) -> None:
        """Called right after a commit (storage.change_notes): sends in the background, so
        the request that committed never waits for Redis."""
        task = asyncio.get_running_loop().create_task(self._publish(encoded(changes, self._node)))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        await asyncio.gather(*self._publishing, return_exceptions=True)
        await self._redis.aclose()

    async def _publish(self, payload: str) -> None:
        try:
            await self._redis.publish(self._channel, payload)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not tell the other gateway processes of a change through Redis (%s); "
                "they see it within a second from the database",
                exc,
            )

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._follow()
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():  # it worked until now: try again soon
                    delay = 0.5
                self._subscribed.clear()
                log.error(
                    "Redis change feed unavailable (%s): other processes' changes reach this "
                    "one within a second from the database; retrying in %.1f s",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_S)

    async def _follow(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                found = decoded(message["data"])
                if found is None:
                    log.warning("ignored a message on %s that is not twofa's", self._channel)
                elif found[0] != self._node:
                    self._apply(found[1])

    def _apply(self, changes: Changes) -> None:
        try:
            self._on_change(changes)
        except Exception:  # one bad handler must not stop the feed
            log.exception("applying a change from another gateway process failed")

"""How soon another gateway process hears of an ended session through Redis (the change feed,
`redis_url`), from the moment the ending process starts ending it.

One `Gateway` on a fresh SQLite database with `redis_url` set ends sessions one after the
other (`SessionService.end`: the DELETE, the commit, the after-commit announcement, the
publish); a second process's feed (`RedisChangeFeed`, in this process but on its own
connections) records when each one arrives. The time counted is the whole path: the DELETE and
its commit on SQLite, the publish, Redis, the other side's read. Without Redis the other
processes find out within `CHECK_SECONDS` (1 s) at worst. Prints p50, p99 and the worst, then
the summary line recorded in bench/README.md.

    .venv/bin/python bench/change_feed.py [--sessions 2000] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from twofa.config import load_settings
from twofa.domain.client import NO_CLIENT
from twofa.services.runtime import Gateway
from twofa.services.state.change_feed import RedisChangeFeed
from twofa.services.state.feed_keys import FeedKeys
from twofa.storage.change_notes import Changes
from twofa.storage.database import create_engine, upgrade

SECRET = "change-feed-benchmark-secret-key-00000000"  # noqa: S105 (benchmark only)


async def migrated(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(sessions: int, redis_url: str, folder: Path) -> list[float]:
    url = f"sqlite+aiosqlite:///{folder / 'twofa.db'}"
    await migrated(url)
    channel = f"twofa-bench:{secrets.token_hex(6)}"
    settings = load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=url,
        redis_url=redis_url,
        redis_channel=channel,
    )
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Event] = {}

    def heard(changes: Changes) -> None:
        now = time.perf_counter()
        for session_id in changes.ended_sessions:
            arrived[session_id] = now
            if (event := waiting.get(session_id)) is not None:
                event.set()

    listener = RedisChangeFeed(redis_url, heard, channel, keys=FeedKeys(settings.secret_keys))
    listener.start()
    gateway = await Gateway.start(settings)
    try:
        assert gateway.change_feed is not None
        if not (await listener.wait_live(5) and await gateway.change_feed.wait_live(5)):
            raise SystemExit(f"Redis at {redis_url} did not answer")
        delays: list[float] = []
        for _ in range(sessions):
            _, session = await gateway.sessions.open(NO_CLIENT)
            waiting[session.id] = event = asyncio.Event()
            started = time.perf_counter()
            await gateway.sessions.end(session)  # the DELETE, the commit, the announcement
            await asyncio.wait_for(event.wait(), 5)
            delays.append((arrived[session.id] - started) * 1000)
        return delays
    finally:
        await gateway.close()
        await listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="sessions ended, one by one")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        delays = asyncio.run(measure(args.sessions, args.redis, Path(folder)))
    p50, p99 = statistics.median(delays), percentile(delays, 0.99)
    print(f"{len(delays)} sessions ended; from ending to arrival at the other process (ms):")
    print(f"  p50 {p50:.2f}, p99 {p99:.2f}, worst {max(delays):.2f}")
    print(f"change feed: ended session heard in p50 {p50:.2f} ms, p99 {p99:.2f} ms (redis)")


if __name__ == "__main__":
    main()

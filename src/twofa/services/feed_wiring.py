"""How a gateway process hears of the other processes' commits and tells them of its own: the
change feed its settings ask for (Redis, PostgreSQL LISTEN/NOTIFY, or the local directory of a
SQLite node's workers), and the listeners on the unit of work that feed it. The composition
root (services.runtime) calls these once, at start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import Settings
from twofa.services.state.change_feed import ChangeFeed, RedisChangeFeed
from twofa.services.state.change_outbox import ChangeOutbox
from twofa.services.state.feed_keys import FeedKeys
from twofa.services.state.feed_state import FeedState
from twofa.services.state.local_feed import LocalChangeFeed, feed_directory
from twofa.services.state.postgres_feed import PostgresChangeFeed
from twofa.storage.change_notes import Changes, announce_commits, before_each_commit
from twofa.storage.oidc_refresh_tokens import EndedSignIn, end_grants_with_sessions


def build_change_feed(
    settings: Settings,
    engine: AsyncEngine,
    state: FeedState,
    apply: Callable[[Changes], None],
) -> ChangeFeed | None:
    """The feed `change_feed` asks for (config.settings): it hears the other processes and
    hands what they committed to `apply`."""
    keys = FeedKeys(settings.secret_keys)
    match state.kind:
        case "redis":
            assert settings.redis_url is not None  # the settings check it
            url = settings.redis_url.get_secret_value()
            return RedisChangeFeed(url, apply, settings.redis_channel, state=state, keys=keys)
        case "postgresql":
            return PostgresChangeFeed(engine, apply, state, keys=keys)
        case "local":
            assert settings.sqlite_file is not None
            directory = feed_directory(Path(settings.sqlite_file).absolute())
            return LocalChangeFeed(directory, apply, state, keys=keys)
    return None


async def follow_changes(
    db: async_sessionmaker[AsyncSession],
    feed: ChangeFeed | None,
    apply: Callable[[Changes], None],
    *,
    clock: Clock,
    sign_ins_ended: Callable[[list[EndedSignIn]], None],
) -> ChangeOutbox | None:
    """Applies this process's commits to its own caches at once (`apply`), sends what the
    others need to hear through `feed`, and starts hearing theirs. OIDC grants end in the
    transaction that ends their session, and `sign_ins_ended` tells the applications after it
    commits: on this process's own commits only, never on another node's heard through the
    feed (that node tells them). The Redis feed, which tells after the commit, gets the
    database's outbox beside it (services.state.change_outbox), returned for closing."""

    def committed(changes: Changes) -> None:
        apply(changes)
        shared = changes.shared()
        if feed is not None and shared:
            feed.announce(shared)

    announce_commits(db, committed)
    end_grants_with_sessions(db, clock.now, sign_ins_ended)
    outbox = None
    if isinstance(feed, PostgresChangeFeed):
        before_each_commit(db, feed.send_in)
    elif isinstance(feed, RedisChangeFeed):
        outbox = ChangeOutbox(db, clock, feed.node, apply, feed.state)
        before_each_commit(db, outbox.write_in)
        await outbox.start()  # before the process serves: see ChangeOutbox.start
    if feed is not None:
        feed.start()
    return outbox

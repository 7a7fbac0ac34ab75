"""The change feed's messages (services.state.change_feed): what one process sends, what another
accepts, and that anything else on the channel is not taken for a change."""

from __future__ import annotations

import asyncio
import json

import pytest

from twofa.services.state.change_feed import RedisChangeFeed, batches, decoded, encoded
from twofa.services.state.feed_keys import FeedKeys
from twofa.storage.change_notes import Changes

EVERYTHING = Changes(frozenset({"s-1", "s-2"}), frozenset({7, 9}), True, True, frozenset({4}))


@pytest.mark.parametrize(
    "changes", [EVERYTHING, Changes(settings=True), Changes(ended_users=frozenset({1}))]
)
def test_a_message_comes_back_as_the_changes_and_the_sender(changes: Changes) -> None:
    assert decoded(encoded(changes, "node-a")) == ("node-a", changes)
    assert decoded(encoded(changes, "node-a").encode()) == ("node-a", changes)  # as Redis gives


def test_a_message_names_sessions_by_id_only() -> None:
    """Session ids are token digests; the tokens themselves never leave the process."""
    assert json.loads(encoded(EVERYTHING, "n")) == {
        "node": "n",
        "sessions": ["s-1", "s-2"],
        "users": [7, 9],
        "settings": True,
        "access_rules": True,
        "changed_users": [4],
    }


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        "null",
        '{"node": "n"}',
        '{"node": 1, "sessions": [], "users": [], "settings": false, "access_rules": false}',
        '{"node": "n", "sessions": [1], "users": [], "settings": false, "access_rules": false}',
        '{"node": "n", "sessions": [], "users": ["7"], "settings": false, "access_rules": false}',
        '{"node": "n", "sessions": [], "users": [true], "settings": false, "access_rules": false}',
        '{"node": "n", "sessions": [], "users": [], "settings": "yes", "access_rules": false}',
        '{"node": "n", "sessions": [], "users": [], "settings": false, "access_rules": false,'
        ' "changed_users": ["4"]}',
        b"\xff\xfe",
    ],
)
def test_anything_else_is_not_a_change(raw: str | bytes) -> None:
    assert decoded(raw) is None


async def test_a_redis_that_accepts_and_never_answers_cannot_hold_a_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stalled Redis (a full network path, a paused server) answers nothing: the publish
    gives up after its command timeout and says so, and closing the feed does not wait
    forever for it."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed = RedisChangeFeed(
        f"redis://127.0.0.1:{port}/0",
        on_change=lambda _: None,
        command_timeout_s=0.3,
        keys=FeedKeys(["k" * 48]),
    )
    try:
        feed.announce(Changes(settings=True))
        # Well above the feed's timeout and below redis-py's own default (5 s): only a
        # publish that waits on the library's default, or forever, reaches it.
        await asyncio.wait_for(feed.close(), 2.0)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert "could not tell the other gateway processes" in caplog.text


def test_a_large_change_is_cut_into_messages_that_each_fit_a_notify() -> None:
    """PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more."""
    many = Changes(
        frozenset(f"{n:064x}" for n in range(1000)),
        frozenset(range(600)),
        True,
        True,
        frozenset(range(10_000, 10_700)),
    )
    messages = batches(many)
    assert all(len(encoded(message, "0123456789abcdef").encode()) < 7000 for message in messages)
    joined = Changes()
    for message in messages:
        joined = joined | message
    assert joined == many
    assert sum(message.settings for message in messages) == 1  # said once


def test_a_small_change_is_one_message() -> None:
    assert batches(EVERYTHING) == [EVERYTHING]


def test_a_local_message_carries_ten_times_a_notify() -> None:
    many = Changes(ended_users=frozenset(range(2000)))
    messages = batches(many, scale=10)
    assert len(messages) == 2
    assert all(len(encoded(m, "0123456789abcdef").encode()) < 60_000 for m in messages)


def test_a_feed_applies_a_message_another_process_signed_and_drops_a_forged_one() -> None:
    heard: list[Changes] = []
    keys = FeedKeys(["k" * 48])
    feed = RedisChangeFeed("redis://127.0.0.1:9/0", heard.append, keys=keys)
    forged = encoded(EVERYTHING, "another-node")  # well formed, but signed by nobody
    feed._heard(forged, "test")
    feed._heard(FeedKeys(["x" * 48]).sealed(forged), "test")  # another gateway's key
    assert heard == []
    feed._heard(keys.sealed(forged), "test")
    assert heard == [EVERYTHING]

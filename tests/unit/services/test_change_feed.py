"""The change feed's messages (services.change_feed): what one process sends, what another
accepts, and that anything else on the channel is not taken for a change."""

from __future__ import annotations

import json

import pytest

from twofa.services.change_feed import decoded, encoded
from twofa.storage.change_notes import Changes

EVERYTHING = Changes(frozenset({"s-1", "s-2"}), frozenset({7, 9}), True, True)


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
        b"\xff\xfe",
    ],
)
def test_anything_else_is_not_a_change(raw: str | bytes) -> None:
    assert decoded(raw) is None

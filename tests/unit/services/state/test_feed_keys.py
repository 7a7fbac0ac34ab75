"""The change feed's messages are signed with the gateway's secret keys: only a message one of
the receiver's keys signed is taken, whatever else reaches the channel, and processes in the
middle of a key rotation (different lists of keys) still hear each other."""

from __future__ import annotations

import pytest

from twofa.services.state.feed_keys import FeedKeys

OLD, NEW, OTHER = "o" * 48, "n" * 48, "x" * 48
BODY = '{"node": "a", "sessions": ["s-1"], "users": [], "settings": false}'


def test_a_sealed_message_opens_to_its_body() -> None:
    keys = FeedKeys([NEW, OLD])
    assert keys.opened(keys.sealed(BODY)) == BODY.encode()
    assert keys.opened(keys.sealed(BODY).encode()) == BODY.encode()  # as Redis gives it


@pytest.mark.parametrize(
    "raw",
    [
        BODY,  # unsigned: what anyone who can publish on the channel could send
        "\n" + BODY,
        "0" * 64 + "\n" + BODY,
        ",".join(["0" * 64] * 9) + "\n" + BODY,  # more MACs than keys anyone has
        "",
        b"\xff\xfe",
    ],
)
def test_a_message_without_a_good_mac_is_not_opened(raw: str | bytes) -> None:
    assert FeedKeys([NEW]).opened(raw) is None


def test_a_message_changed_after_it_was_signed_is_not_opened() -> None:
    keys = FeedKeys([NEW])
    head, _, _ = keys.sealed(BODY).partition("\n")
    assert keys.opened(f"{head}\n{BODY.replace('s-1', 's-2')}") is None


def test_another_gateways_key_does_not_open_it() -> None:
    assert FeedKeys([OTHER]).opened(FeedKeys([NEW]).sealed(BODY)) is None


@pytest.mark.parametrize(
    ("sender", "receiver"),
    [([NEW, OLD], [OLD]), ([OLD], [NEW, OLD]), ([NEW, OLD], [NEW])],
)
def test_processes_in_the_middle_of_a_key_rotation_hear_each_other(
    sender: list[str], receiver: list[str]
) -> None:
    assert FeedKeys(receiver).opened(FeedKeys(sender).sealed(BODY)) == BODY.encode()


def test_a_feed_needs_a_key() -> None:
    with pytest.raises(ValueError, match="secret key"):
        FeedKeys([])

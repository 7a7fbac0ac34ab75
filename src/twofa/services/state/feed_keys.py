"""The change feed's messages carry HMACs made with the gateway's secret keys, so that only a
twofa process can make another forget what it cached. Anyone who can publish on the channel
(a Redis client, a database login) could otherwise, and a flood of forged changes naming many
users each kept a node busy past the second a real sign-out is promised in: a forged message
now costs one HMAC and is dropped. Each message is signed with every key the process has, and
one signed by any key the receiver has is taken: during a rotation (`twofa keys rotate`) the
processes hold different lists for a while, and must still hear each other."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

_LABEL: Final = b"twofa change feed v1\x00"  # keys of their own, not the sealing keys
_MAC_HEX: Final = 64
_MOST_KEYS: Final = 8  # a longer head is nobody's message


class FeedKeys:
    def __init__(self, secret_keys: Sequence[str]) -> None:
        if not secret_keys:
            raise ValueError("the change feed needs the gateway's secret key")
        self._keys = tuple(hashlib.sha256(_LABEL + key.encode()).digest() for key in secret_keys)

    def sealed(self, body: str) -> str:
        """`body` behind a line of its HMACs, one for each key, newest first."""
        data = body.encode()
        macs = ",".join(hmac.new(key, data, hashlib.sha256).hexdigest() for key in self._keys)
        return f"{macs}\n{body}"

    def opened(self, raw: bytes | str) -> bytes | None:
        """The body of a message one of this process's keys signed, else None."""
        data = raw.encode() if isinstance(raw, str) else raw
        head, newline, body = data.partition(b"\n")
        if not newline or len(head) > (_MAC_HEX + 1) * _MOST_KEYS:
            return None
        macs = head.split(b",")
        for key in self._keys:
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
            if any(hmac.compare_digest(expected, mac) for mac in macs):
                return body
        return None

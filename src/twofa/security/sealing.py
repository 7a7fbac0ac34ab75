"""Secrets at rest (the Duo secret key, the SMTP password, TOTP seeds, what a challenge page
shows): AES-256-GCM with a key derived from one of the gateway's secret keys by HKDF, a fresh
96-bit nonce per value, and the value's purpose bound in as associated data so a sealed Duo key
cannot be replayed as something else.

The gateway may hold several keys, newest first (config.secret_keys). The newest seals, as
`v2:<key id>:<base64 nonce+ciphertext>`; the key id is a short HKDF fingerprint of the key (it
tells which key to open with and nothing about the key). Any listed key opens, so values sealed
by an older key stay readable until `twofa keys rotate` has sealed them again. Values written
before key ids, `v1:<base64>`, open with whichever listed key sealed them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twofa.config.secret_keys import secret_keys
from twofa.errors import Unavailable

V1_PREFIX: Final = "v1:"
V2_PREFIX: Final = "v2:"
KEY_ID_HEX: Final = 12  # 48 bits: two keys of one gateway never share an id by chance
# A v2 value's head: the prefix and key id up to the second colon (`v2:0123456789ab:`).
V2_HEAD_LENGTH: Final = len(V2_PREFIX) + KEY_ID_HEX + 1
_NONCE_BYTES: Final = 12
# The same derivation as before key ids, so that v1 values open with the key that sealed them.
_AEAD_INFO: Final = b"twofa secrets at rest v1"
_KEY_ID_INFO: Final = b"twofa secret key id v2"
_CANNOT: Final = "a stored secret cannot be decrypted"


class SealError(Unavailable):
    """A sealed value could not be opened: its key is not listed, or the data was altered."""


def _derive(secret: str, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        secret.encode("utf-8")
    )


def key_id(secret: str) -> str:
    """The id a key's values carry: HKDF with its own label, so it reveals nothing of the
    AES key (derived with another label) and cannot be turned back into the secret."""
    return _derive(secret, _KEY_ID_INFO, KEY_ID_HEX // 2).hex()


def head_of_key(kid: str) -> str:
    """How every value sealed by the key `kid` begins."""
    return f"{V2_PREFIX}{kid}:"


def head_of(sealed: str) -> str:
    """What tells which key sealed a value: a v2 value's prefix and key id (`v2:<id>:`), the
    first three characters of anything else (`v1:`)."""
    return sealed[:V2_HEAD_LENGTH] if sealed.startswith(V2_PREFIX) else sealed[: len(V1_PREFIX)]


def key_id_of(sealed: str) -> str | None:
    """The key id a v2 value names (whether or not that key is listed); None for a v1 value
    or anything else."""
    if sealed.startswith(V2_PREFIX) and sealed[V2_HEAD_LENGTH - 1 : V2_HEAD_LENGTH] == ":":
        return sealed[len(V2_PREFIX) : V2_HEAD_LENGTH - 1]
    return None


class Sealer:
    def __init__(self, secrets: str | Sequence[str]) -> None:
        """`secrets`: the keys, newest first, or the secret as configured (one key a line)."""
        keys = secret_keys(secrets) if isinstance(secrets, str) else tuple(secrets)
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self._aeads = {key_id(key): AESGCM(_derive(key, _AEAD_INFO, 32)) for key in keys}
        if len(self._aeads) != len(keys):
            raise ValueError("the same key is listed twice")
        self.key_ids: tuple[str, ...] = tuple(self._aeads)  # newest first
        self._current_head = head_of_key(self.key_ids[0])

    @property
    def newest_key_id(self) -> str:
        return self.key_ids[0]

    def seal(self, plaintext: str, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        aead = self._aeads[self.newest_key_id]
        sealed = aead.encrypt(
            nonce, plaintext.encode("utf-8"), self._bound(self.newest_key_id, purpose)
        )
        return self._current_head + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, purpose: str) -> str:
        if sealed.startswith(V2_PREFIX):
            return self._open_v2(sealed, purpose)
        if sealed.startswith(V1_PREFIX):
            return self._open_v1(sealed, purpose)
        raise SealError("unknown sealed-value format")

    def is_current(self, sealed: str) -> bool:
        """Whether the value is sealed by the newest key: nothing for a rotation to do. A v1
        value never is (which key sealed it shows only by opening it)."""
        return sealed.startswith(self._current_head)

    def _open_v2(self, sealed: str, purpose: str) -> str:
        kid = key_id_of(sealed)
        if kid is None:
            raise SealError("unknown sealed-value format")
        aead = self._aeads.get(kid)
        if aead is None:
            raise SealError(
                f"{_CANNOT}: it was sealed by the key {kid}, which is not in secret_key (an old "
                "key removed before `twofa keys rotate` finished?)"
            )
        try:
            return _decrypted(aead, sealed[V2_HEAD_LENGTH:], self._bound(kid, purpose))
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"{_CANNOT}: the data was altered") from exc

    def _open_v1(self, sealed: str, purpose: str) -> str:
        # No key id: the tag check tells the key that sealed it from the others.
        for aead in self._aeads.values():
            try:
                return _decrypted(aead, sealed.removeprefix(V1_PREFIX), purpose.encode("utf-8"))
            except (InvalidTag, ValueError):
                continue
        raise SealError(
            f"{_CANNOT}: no key in secret_key opens it (the key that sealed it was removed) or "
            "the data was altered"
        )

    @staticmethod
    def _bound(kid: str, purpose: str) -> bytes:
        """The associated data: the purpose, and the key id so a value's head cannot be
        swapped."""
        return f"{kid}:{purpose}".encode()


def _decrypted(aead: AESGCM, encoded: str, associated: bytes) -> str:
    raw = base64.b64decode(encoded, validate=True)
    nonce, ciphertext = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    return aead.decrypt(nonce, ciphertext, associated).decode("utf-8")

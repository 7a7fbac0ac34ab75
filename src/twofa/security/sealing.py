"""Secrets at rest (the Duo secret key, later TOTP seeds): AES-256-GCM with a key derived from
the gateway's secret by HKDF, a fresh 96-bit nonce per value, and the value's purpose bound in
as associated data so a sealed Duo key cannot be replayed as something else.

A sealed value reads `v1:<base64 nonce+ciphertext>`; the version leaves room for key rotation.
"""

from __future__ import annotations

import base64
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twofa.errors import Unavailable

_PREFIX: Final = "v1:"
_NONCE_BYTES: Final = 12


class SealError(Unavailable):
    """A sealed value could not be opened: wrong gateway secret, or tampered data."""


class Sealer:
    def __init__(self, gateway_secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"twofa secrets at rest v1"
        ).derive(gateway_secret.encode("utf-8"))
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), purpose.encode("utf-8"))
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, purpose: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SealError("unknown sealed-value format")
        try:
            raw = base64.b64decode(sealed.removeprefix(_PREFIX), validate=True)
            nonce, ciphertext = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._aead.decrypt(nonce, ciphertext, purpose.encode("utf-8")).decode("utf-8")
        except (InvalidTag, ValueError) as exc:
            raise SealError(
                "a stored secret cannot be decrypted: the gateway secret_key changed or the "
                "data was altered"
            ) from exc

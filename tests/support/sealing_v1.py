"""What twofa wrote before key ids: `v1:<base64 nonce+ciphertext>`, AES-256-GCM under a key
derived from the one gateway secret, the purpose as associated data. For tests that start from
a database an older twofa left (tests/unit/security/test_sealing.py checks this against values
the older code sealed)."""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def seal_v1(secret: str, plaintext: str, purpose: str) -> str:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"twofa secrets at rest v1"
    ).derive(secret.encode("utf-8"))
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), purpose.encode("utf-8"))
    return "v1:" + base64.b64encode(nonce + sealed).decode("ascii")

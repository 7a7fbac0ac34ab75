"""TOTP (RFC 6238) as a second factor: secrets, provisioning URIs and code checks, no storage.

A check returns the time step that matched, so the service can store it and refuse that step
(and any earlier one) forever after: a code works once. Written on hmac directly rather than
pyotp because the matched step is the point, and pyotp's `verify` does not return it.
Not wired into the flows yet (issue 5).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Final

CODE = "totp"
STEP_SECONDS: Final = 30
DIGITS: Final = 6
SECRET_BYTES: Final = 20  # 160 bits, as RFC 4226 recommends for SHA-1


def new_secret() -> str:
    """A random base32 secret (no padding), as authenticator apps expect."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def _key(secret_b32: str) -> bytes:
    padded = secret_b32.upper() + "=" * (-len(secret_b32) % 8)
    return base64.b32decode(padded, casefold=True)


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226: HMAC over the 8-byte counter, dynamic truncation, `digits` decimal digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def time_step(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_SECONDS


def provisioning_uri(secret_b32: str, account: str, issuer: str) -> str:
    label = urllib.parse.quote(f"{issuer}:{account}")
    query = urllib.parse.urlencode(
        {"secret": secret_b32, "issuer": issuer, "digits": DIGITS, "period": STEP_SECONDS}
    )
    return f"otpauth://totp/{label}?{query}"


@dataclass(frozen=True)
class TotpMatch:
    step: int


def verify(
    secret_b32: str, code: str, now: datetime, last_used_step: int | None, window: int = 1
) -> TotpMatch | None:
    """The matching step within ±`window` steps of now that is newer than `last_used_step`."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    key = _key(secret_b32)
    current = time_step(now)
    for step in range(current - window, current + window + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(hotp(key, step), code):
            return TotpMatch(step)
    return None

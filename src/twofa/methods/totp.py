"""TOTP (RFC 6238) as a second factor: secrets, provisioning URIs and code checks, no storage.

A check returns the time step that matched, so the service can store it and refuse that step
(and any earlier one) forever after: a code works once. Written on hmac directly rather than
pyotp because the matched step is the point, and pyotp's `verify` does not return it.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from twofa.methods.base import (
    Draft,
    MethodContext,
    MethodKind,
    NewCredential,
    Prompt,
    ResponseRejected,
    StoredCredential,
    Verified,
    normalise_code,
)

CODE = "totp"
STEP_SECONDS: Final = 30
DIGITS: Final = 6
SECRET_BYTES: Final = 20  # 160 bits, as RFC 4226 recommends for SHA-1
ISSUER_OPTION: Final = "issuer"  # the method option: the name the apps show
DEFAULT_ISSUER: Final = "twofa"
MAX_ISSUER_LENGTH: Final = 40


def new_secret() -> str:
    """A random base32 secret (no padding), as authenticator apps expect."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def secret_bytes(secret_b32: str) -> bytes:
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


def issuer_from_options(options: Mapping[str, Any]) -> str:
    """The name authenticator apps show above the code: the admin's, else the product's."""
    issuer = options.get(ISSUER_OPTION)
    return issuer if isinstance(issuer, str) and issuer_problem(issuer) is None else DEFAULT_ISSUER


def issuer_problem(issuer: str) -> str | None:
    """What is wrong with a name for the apps, or None. A colon is refused: the app's label
    is `issuer:account`, and apps split it at the first colon."""
    if not 1 <= len(issuer) <= MAX_ISSUER_LENGTH or issuer != issuer.strip():
        return f"between 1 and {MAX_ISSUER_LENGTH} characters, no spaces around it"
    if ":" in issuer or not issuer.isprintable():
        return "no colon and no control characters: apps show the name as 'name:username'"
    return None


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
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    key = secret_bytes(secret_b32)
    current = time_step(now)
    for step in range(current - window, current + window + 1):
        if last_used_step is not None and step <= last_used_step:
            continue
        if hmac.compare_digest(hotp(key, step), code):
            return TotpMatch(step)
    return None


class TotpMethod:
    """An authenticator app (Google/Microsoft Authenticator, 1Password …). The secret is made
    here, shown once as a QR code and text, and confirmed by a first valid code."""

    code = CODE
    title = "Authenticator app"
    kind = MethodKind.CODE
    many_per_user = False
    checks_slowly = False
    keeps_items = False  # the last used step lives in the credential's state
    challenge_seconds = 300

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        secret = new_secret()
        issuer = issuer_from_options(context.options)
        uri = provisioning_uri(secret, context.user.username, issuer)
        grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
        return Draft(show={"uri": uri, "secret": grouped, "issuer": issuer}, secret=secret)

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        if secret is None:
            raise ResponseRejected("enrolment draft has no secret")
        match = verify(secret, normalise_code(response.get("code", "")), context.now, None)
        if match is None:
            raise ResponseRejected("wrong or malformed code")
        return NewCredential(label=self.title, secret=secret, state={"last_step": match.step})

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt:
        return Prompt(show={})

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        code = normalise_code(response.get("code", ""))
        for credential in credentials:
            if credential.secret is None:
                continue
            last = credential.state.get("last_step")
            match = verify(
                credential.secret, code, context.now, last if isinstance(last, int) else None
            )
            if match is not None:
                return Verified(credential.id, state={"last_step": match.step})
        raise ResponseRejected("wrong, reused or malformed code")

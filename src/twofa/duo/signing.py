"""Duo's canonical request signing, as pure functions.

Both sides use this module: the client to sign what it sends, the simulator to check what it
receives. The rules follow `duo_client` 5.7.0 byte for byte (see shared/reference/duo-auth-api.md
§1); they are checked by known-answer vectors and an oracle test against `duo_client` itself.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final, Literal

SigVersion = Literal[1, 2, 4, 5]
ParamValue = str | bool | int | Sequence[str]
NormalizedParams = Mapping[str, Sequence[str]]

EMPTY_BODY_HASH: Final = hashlib.sha512(b"").hexdigest()
JSON_CONTENT_TYPE: Final = "application/json"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
_METHODS_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH"})


class Digest(Enum):
    """HMAC digests Duo accepts; the hex length of a signature tells them apart."""

    SHA1 = "sha1"
    SHA512 = "sha512"

    @property
    def hex_length(self) -> int:
        return 40 if self is Digest.SHA1 else 128


class SigningError(ValueError):
    """The request cannot be signed as given (Duo's clients raise ValueError for these too)."""


def format_date(moment: datetime) -> str:
    """RFC 2822 date in UTC with the zone written `-0000`, as `email.utils.formatdate` writes."""
    return email.utils.formatdate(moment.timestamp())


def normalize_params(params: Mapping[str, ParamValue]) -> dict[str, list[str]]:
    """Every value becomes a list of strings; booleans are `true`/`false`, ints decimal."""

    def as_text(value: str | bool | int) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    normalized: dict[str, list[str]] = {}
    for key, value in params.items():
        if isinstance(value, str | bool | int):
            normalized[key] = [as_text(value)]
        else:
            normalized[key] = [as_text(item) for item in value]
    return normalized


def percent_encode(text: str) -> str:
    """OAuth-style encoding: only `A-Z a-z 0-9 - _ . ~` stay literal; upper-case hex of UTF-8."""
    return urllib.parse.quote(text, safe="~")


def canon_params(params: NormalizedParams) -> str:
    """Sorted by encoded key, then by encoded value within a key; repeated keys are kept."""
    pairs: list[str] = []
    for encoded_key, values in sorted((percent_encode(k), v) for k, v in params.items()):
        pairs.extend(f"{encoded_key}={encoded}" for encoded in sorted(map(percent_encode, values)))
    return "&".join(pairs)


def canon_x_duo_headers(headers: Mapping[str, str]) -> str:
    """SHA-512 hex of the lower-cased, sorted `X-Duo-*` headers joined with NUL (sig v5 only)."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        name_lower = name.lower()
        if "\x00" in name or "\x00" in value:
            raise SigningError("a NUL character is not allowed in an X-Duo header")
        if not name_lower.startswith("x-duo-"):
            raise SigningError(f"additional headers must start with X-Duo-, got {name!r}")
        if name_lower in lowered:
            raise SigningError(f"duplicate header {name!r}")
        lowered[name_lower] = value
    joined = "\x00".join(part for name in sorted(lowered) for part in (name, lowered[name]))
    return hashlib.sha512(joined.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CanonicalRequest:
    """Everything a signature covers. `params` is empty for v4/v5 requests with a JSON body."""

    date: str
    method: str
    host: str
    path: str
    params: NormalizedParams = field(default_factory=dict)
    body: bytes = b""
    x_duo_headers: Mapping[str, str] = field(default_factory=dict)

    def text(self, sig_version: SigVersion) -> str:
        lines = [self.method.upper(), self.host.lower(), self.path, canon_params(self.params)]
        if sig_version == 1:
            return "\n".join(lines)
        lines.insert(0, self.date)
        if sig_version in (4, 5):
            lines.append(hashlib.sha512(self.body).hexdigest())
        if sig_version == 5:
            lines.append(canon_x_duo_headers(self.x_duo_headers))
        return "\n".join(lines)


def signature(skey: str, canonical_text: str, digest: Digest) -> str:
    """Lower-case hex HMAC of the canonical text keyed with the secret key."""
    return hmac.new(skey.encode("utf-8"), canonical_text.encode("utf-8"), digest.value).hexdigest()


def authorization_header(ikey: str, hex_signature: str) -> str:
    token = base64.b64encode(f"{ikey}:{hex_signature}".encode()).decode("ascii")
    return f"Basic {token}"


def json_body(params: Mapping[str, object]) -> bytes:
    """The exact JSON body duo_client sends: compact, sorted keys, ASCII escapes."""
    return json.dumps(params, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class SignedRequest:
    """A request ready for the wire: `target` is the path plus query string."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def sign_request(
    *,
    ikey: str,
    skey: str,
    host: str,
    method: str,
    path: str,
    params: Mapping[str, ParamValue],
    date: str,
    sig_version: Literal[2, 5] = 5,
    digest: Digest = Digest.SHA512,
    x_duo_headers: Mapping[str, str] | None = None,
    date_header: Literal["Date", "X-Duo-Date"] = "Date",
) -> SignedRequest:
    """Build and sign a request as Duo's clients put it on the wire.

    v2 puts parameters in the query (GET) or a form body (POST) and signs them; v5 sends a
    JSON body for POST and signs its hash instead. v5 always uses SHA-512. With
    `date_header="X-Duo-Date"` under v5 the date is also folded into the header hash, as
    Duo's newer signer does.
    """
    method = method.upper()
    extra_headers = dict(x_duo_headers or {})
    if sig_version == 2 and extra_headers:
        raise SigningError("X-Duo headers are only signed in sig v5")
    if date_header == "X-Duo-Date" and sig_version == 5:
        extra_headers["X-Duo-Date"] = date
    normalized = normalize_params(params)
    has_body = method in _METHODS_WITH_BODY
    headers: dict[str, str] = {date_header: date}
    if sig_version == 5:
        digest = Digest.SHA512
        headers.update(extra_headers)
    if sig_version == 5 and has_body:
        body = json_body(params)
        canonical = CanonicalRequest(date, method, host, path, {}, body, extra_headers)
        headers["Content-Type"] = JSON_CONTENT_TYPE
        target = path
    else:
        canonical = CanonicalRequest(date, method, host, path, normalized, b"", extra_headers)
        encoded = urllib.parse.urlencode(normalized, doseq=True)
        body = encoded.encode("ascii") if has_body else b""
        target = path if has_body else f"{path}?{encoded}"
        if has_body:
            headers["Content-Type"] = FORM_CONTENT_TYPE
    hex_signature = signature(skey, canonical.text(sig_version), digest)
    headers["Authorization"] = authorization_header(ikey, hex_signature)
    return SignedRequest(method=method, target=target, headers=headers, body=body)

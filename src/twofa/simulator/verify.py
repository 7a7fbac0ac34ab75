"""Checks a signed request the way Duo does (shared/reference/duo-auth-api.md §1.7).

The parameters are decoded from the wire and canonicalised again (the wire encoding differs
from the signed one); a JSON body is hashed exactly as received. Any of v1, v2, v4 and v5 is
accepted, over the configured API hostname or the Host header with or without its port.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hmac
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC

from twofa.duo.signing import (
    JSON_CONTENT_TYPE,
    CanonicalRequest,
    Digest,
    SigVersion,
    signature,
)
from twofa.simulator.errors import (
    DuoFailure,
    invalid_parameter,
    invalid_signature,
    missing_credentials,
)


@dataclass(frozen=True)
class ReceivedRequest:
    """What arrived: `headers` with lower-case names, `query` and `body` exactly as sent."""

    method: str
    path: str
    query: str
    body: bytes
    headers: Mapping[str, str]

    @property
    def is_json(self) -> bool:
        content_type = self.headers.get("content-type", "").split(";")[0].strip().lower()
        return content_type == JSON_CONTENT_TYPE

    def form_params(self) -> dict[str, list[str]]:
        """Query parameters, plus the form body of a non-JSON POST; `+` decodes to space."""
        params: dict[str, list[str]] = {}
        sources = [self.query]
        if self.body and not self.is_json:
            try:
                sources.append(self.body.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid_parameter("the form body is not UTF-8") from None
        for source in sources:
            for key, value in urllib.parse.parse_qsl(source, keep_blank_values=True):
                params.setdefault(key, []).append(value)
        return params

    def json_params(self) -> dict[str, list[str]]:
        try:
            decoded = json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise invalid_parameter("request body is not valid JSON") from None
        if not isinstance(decoded, dict):
            raise invalid_parameter("request body must be a JSON object")
        return {key: _json_values(value) for key, value in decoded.items()}


@dataclass(frozen=True)
class VerifiedRequest:
    ikey: str
    params: Mapping[str, Sequence[str]]

    def get(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None


def _json_values(value: object) -> list[str]:
    if isinstance(value, list):
        return [_json_scalar(item) for item in value]
    return [_json_scalar(value)]


def _json_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _credentials(headers: Mapping[str, str]) -> tuple[str, str]:
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise missing_credentials()
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise missing_credentials("Authorization is not valid base64") from None
    ikey, colon, hex_signature = decoded.partition(":")
    if not colon or not ikey:
        raise missing_credentials("Authorization must be ikey:signature")
    return ikey, hex_signature.lower()


def check_date(headers: Mapping[str, str], now: float, window_s: float) -> str:
    """X-Duo-Date if present, else Date, within `window_s` of `now`; the raw string is signed."""
    date = headers.get("x-duo-date") or headers.get("date")
    if not date:
        raise missing_credentials("Missing request timestamp")
    try:
        parsed = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise invalid_signature(f"unreadable request date {date!r}") from None
    # RFC 2822 reads "-0000" as "UTC, source zone unknown", which Python returns naive.
    sent_at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if abs(sent_at - now) > window_s:
        raise invalid_signature(
            f"request date is {sent_at - now:+.0f} s from the server clock "
            f"(allowed: ±{window_s:.0f} s)"
        )
    return date


def candidate_hosts(headers: Mapping[str, str], api_hostname: str | None) -> list[str]:
    host_header = headers.get("host", "").lower()
    hosts = [api_hostname.lower()] if api_hostname else []
    without_port = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    for host in (host_header, without_port):
        if host and host not in hosts:
            hosts.append(host)
    return hosts


def verify_request(
    request: ReceivedRequest,
    *,
    secret_for: Mapping[str, str],
    api_hostname: str | None,
    now: float,
    window_s: float = 300.0,
) -> VerifiedRequest:
    """The verified ikey and decoded parameters, or a `DuoFailure` with Duo's code."""
    ikey, given = _credentials(request.headers)
    skey = secret_for.get(ikey)
    if skey is None:
        raise DuoFailure(40102, "Invalid integration key in request credentials")
    date = check_date(request.headers, now, window_s)
    digest = {40: Digest.SHA1, 128: Digest.SHA512}.get(len(given))
    if digest is None:
        raise invalid_signature("the signature is neither SHA-1 nor SHA-512 hex")
    x_duo_headers = {k: v for k, v in request.headers.items() if k.startswith("x-duo-")}
    form_params = request.form_params() if not request.is_json else {}
    query_params = dict(urllib.parse.parse_qs(request.query, keep_blank_values=True))
    candidates: list[tuple[SigVersion, Mapping[str, Sequence[str]], bytes]] = []
    if digest is Digest.SHA512 and (request.is_json or request.method in ("GET", "DELETE")):
        body_params = query_params if request.is_json else form_params
        candidates += [(5, body_params, request.body), (4, body_params, request.body)]
    if not request.is_json:
        candidates += [(2, form_params, b""), (1, form_params, b"")]
    for host in candidate_hosts(request.headers, api_hostname):
        for version, params, body in candidates:
            canonical = CanonicalRequest(
                date, request.method, host, request.path, params, body, x_duo_headers
            )
            expected = signature(skey, canonical.text(version), digest)
            if hmac.compare_digest(expected, given):
                signed_params = request.json_params() if request.is_json else form_params
                return VerifiedRequest(ikey=ikey, params={**query_params, **signed_params})
    raise invalid_signature()

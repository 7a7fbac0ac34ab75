"""An async client for Duo's Auth API v2 on an injected `httpx.AsyncClient`.

Every call is signed afresh (so a 429 retry never carries a stale date), has explicit
timeouts (long-polls get their own read timeout), and fails with a `DuoError` subclass.
A push is started with `async=1` and followed with `auth_status`, so a worker never waits
on a person's phone.
"""

from __future__ import annotations

import asyncio
import json
import random
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import httpx

from twofa.duo import parsing
from twofa.duo.endpoint import DuoEndpoint
from twofa.duo.errors import (
    DuoApiError,
    DuoMalformedResponse,
    DuoRateLimited,
    DuoServerError,
    DuoTimeout,
    DuoTransportError,
)
from twofa.duo.models import (
    AuthOutcome,
    Enrollment,
    EnrollmentStatus,
    Factor,
    Preauth,
    PushRequest,
)
from twofa.duo.signing import Digest, format_date, sign_request

USER_AGENT: Final = "twofa-duo/0.1"
_FIRST_BACKOFF_S: Final = 1.0
_LAST_BACKOFF_S: Final = 32.0


@dataclass(frozen=True)
class DuoTimeouts:
    """Seconds. `long_poll_read` must outlast the server's hold on `auth_status`."""

    connect: float = 5.0
    read: float = 15.0
    long_poll_read: float = 75.0


@dataclass(frozen=True)
class DuoCredentials:
    ikey: str
    skey: str


@dataclass(frozen=True)
class AuthRequest:
    """One `auth` call. Exactly one of `username`/`user_id`; `passcode` only with PASSCODE."""

    factor: Factor
    username: str | None = None
    user_id: str | None = None
    push: PushRequest = field(default_factory=PushRequest)
    passcode: str | None = None
    ipaddr: str | None = None
    hostname: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def user_params(username: str | None, user_id: str | None) -> dict[str, str]:
    if (username is None) == (user_id is None):
        raise ValueError("pass exactly one of username or user_id")
    return {"username": username} if username is not None else {"user_id": str(user_id)}


def auth_params(request: AuthRequest, *, run_async: bool) -> dict[str, str]:
    params = user_params(request.username, request.user_id)
    params["factor"] = request.factor.value
    params["async"] = "1" if run_async else "0"
    if request.factor is Factor.PASSCODE:
        if not request.passcode:
            raise ValueError("factor passcode needs a passcode")
        params["passcode"] = request.passcode  # Duo refuses `device` next to a passcode.
    else:
        params["device"] = request.push.device
    if request.factor in (Factor.PUSH, Factor.AUTO):
        push = request.push
        if push.type:
            params["type"] = push.type
        if push.display_username:
            params["display_username"] = push.display_username
        if push.pushinfo:
            params["pushinfo"] = urllib.parse.urlencode(push.pushinfo)
    for name, value in (("ipaddr", request.ipaddr), ("hostname", request.hostname)):
        if value:
            params[name] = value
    return params


class DuoAuthClient:
    """Duo Auth API v2. Construct one per integration and share it; it holds no per-user state."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        credentials: DuoCredentials,
        endpoint: DuoEndpoint,
        timeouts: DuoTimeouts = DuoTimeouts(),
        sig_version: Literal[2, 5] = 5,
        now: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._credentials = credentials
        self._endpoint = endpoint
        self._timeouts = timeouts
        self._sig_version: Literal[2, 5] = sig_version
        self._now = now
        self._sleep = sleep
        self._jitter = jitter

    async def ping(self) -> int:
        """Duo's clock (unix seconds); unsigned, so it works even with wrong keys."""
        response = await self._send("GET", "/auth/v2/ping", {}, signed=False)
        return parsing.parse_time(self._unwrap(response), "ping")

    async def check(self) -> int:
        """Proves the integration key, secret key and hostname work together."""
        return parsing.parse_time(await self._call("GET", "/auth/v2/check", {}), "check")

    async def logo(self) -> bytes:
        response = await self._send("GET", "/auth/v2/logo", {})
        if response.status_code == 200 and response.headers.get("content-type", "").startswith(
            "image/"
        ):
            return response.content
        self._unwrap(response)
        raise DuoMalformedResponse("logo: a 200 answer that is not an image")

    async def enroll(
        self,
        *,
        username: str | None = None,
        valid_secs: int | None = None,
        bypass_codes: int | None = None,
    ) -> Enrollment:
        params: dict[str, str] = {}
        if username is not None:
            params["username"] = username
        if valid_secs is not None:
            params["valid_secs"] = str(valid_secs)
        if bypass_codes is not None:
            params["bypass_codes"] = str(bypass_codes)
        return parsing.parse_enrollment(await self._call("POST", "/auth/v2/enroll", params))

    async def enroll_status(self, *, user_id: str, activation_code: str) -> EnrollmentStatus:
        params = {"user_id": user_id, "activation_code": activation_code}
        response = await self._call("POST", "/auth/v2/enroll_status", params)
        return parsing.parse_enrollment_status(response)

    async def preauth(
        self,
        *,
        username: str | None = None,
        user_id: str | None = None,
        ipaddr: str | None = None,
        hostname: str | None = None,
        trusted_device_token: str | None = None,
    ) -> Preauth:
        params = user_params(username, user_id)
        optional = {
            "ipaddr": ipaddr,
            "hostname": hostname,
            "trusted_device_token": trusted_device_token,
        }
        params.update({name: value for name, value in optional.items() if value})
        return parsing.parse_preauth(await self._call("POST", "/auth/v2/preauth", params))

    async def auth(self, request: AuthRequest) -> AuthOutcome:
        """Synchronous `auth`: blocks until the push or call ends (up to Duo's own timeout)."""
        params = auth_params(request, run_async=False)
        response = await self._call(
            "POST", "/auth/v2/auth", params, read_timeout=self._timeouts.long_poll_read
        )
        return parsing.parse_auth_outcome(response, "auth")

    async def start_auth(self, request: AuthRequest) -> str:
        """`auth` with `async=1`: returns the txid at once; follow it with `auth_status`."""
        params = auth_params(request, run_async=True)
        return parsing.parse_txid(await self._call("POST", "/auth/v2/auth", params))

    async def auth_status(self, txid: str) -> AuthOutcome:
        """Long-polls: Duo answers at the next change of the transaction or after its hold time."""
        response = await self._call(
            "GET",
            "/auth/v2/auth_status",
            {"txid": txid},
            read_timeout=self._timeouts.long_poll_read,
        )
        return parsing.parse_auth_outcome(response, "auth_status")

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        read_timeout: float | None = None,
    ) -> object:
        response = await self._send(method, path, params, read_timeout=read_timeout)
        return self._unwrap(response)

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        signed: bool = True,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        """Sends with Duo's 429 schedule: waits 1, 2, 4 … 32 s (+ up to 1 s jitter) between."""
        timeout = httpx.Timeout(
            connect=self._timeouts.connect,
            read=read_timeout or self._timeouts.read,
            write=self._timeouts.read,
            pool=self._timeouts.connect,
        )
        wait = _FIRST_BACKOFF_S
        while True:
            response = await self._send_once(method, path, params, signed, timeout)
            if response.status_code != 429 or wait > _LAST_BACKOFF_S:
                return response
            await self._sleep(wait + self._jitter())
            wait *= 2

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        signed: bool,
        timeout: httpx.Timeout,
    ) -> httpx.Response:
        if signed:
            request = sign_request(
                ikey=self._credentials.ikey,
                skey=self._credentials.skey,
                host=self._endpoint.signed_host,
                method=method,
                path=path,
                params=params,
                date=format_date(self._now()),
                sig_version=self._sig_version,
                digest=Digest.SHA512,
            )
            target, headers, body = request.target, request.headers, request.body
        else:
            target, headers, body = path, {}, b""
        headers = {**headers, "User-Agent": USER_AGENT}
        url = self._endpoint.base_url + target
        try:
            return await self._http.request(
                method, url, headers=headers, content=body or None, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise DuoTimeout(f"{method} {path}: no answer from {self._endpoint.base_url}") from exc
        except httpx.TransportError as exc:
            raise DuoTransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _unwrap(response: httpx.Response) -> object:
        """The `response` member of an OK envelope, or the typed error for anything else."""
        try:
            envelope = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            envelope = None
        stat = envelope.get("stat") if isinstance(envelope, dict) else None
        if response.status_code == 200 and stat == "OK" and "response" in envelope:
            return envelope["response"]
        if response.status_code == 200:  # Duo never sends FAIL with 200: not its protocol
            raise DuoMalformedResponse(f"unexpected answer: {response.text[:200]!r}")
        raise _api_error(response, envelope)


def _api_error(response: httpx.Response, envelope: object) -> DuoApiError:
    code: int | None = None
    message = response.reason_phrase or "error"
    detail: str | None = None
    if isinstance(envelope, dict):
        raw_code = envelope.get("code")
        # Duo's Go client tolerates the code as a string; so do we.
        if isinstance(raw_code, int | str) and str(raw_code).isdigit():
            code = int(raw_code)
        message = str(envelope.get("message", message))
        raw_detail = envelope.get("message_detail")
        detail = str(raw_detail) if raw_detail is not None else None
    kind: type[DuoApiError] = DuoApiError
    if response.status_code == 429:
        kind = DuoRateLimited
    elif response.status_code >= 500:
        kind = DuoServerError
    return kind(http_status=response.status_code, code=code, message=message, detail=detail)

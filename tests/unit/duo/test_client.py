"""DuoAuthClient against a fake Duo on `httpx.MockTransport`: wire format, parsing, errors, 429."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
import pytest

from twofa.duo import (
    AuthRequest,
    DuoApiError,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoError,
    DuoMalformedResponse,
    DuoRateLimited,
    DuoServerError,
    DuoTimeout,
    DuoTimeouts,
    DuoTransportError,
    DuoUnavailable,
)
from twofa.duo.models import (
    AuthResult,
    Capability,
    DeviceType,
    Enrollment,
    EnrollmentStatus,
    Factor,
    PreauthOutcome,
    PushRequest,
    TransactionStatus,
)
from twofa.duo.signing import CanonicalRequest, Digest, signature

IKEY, SKEY = "DIWJ8X6AEYOR5OMC6TQ1", "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"
HOST = "api-1234abcd.duosecurity.com"
TIMEOUTS = DuoTimeouts(connect=3.0, read=11.0, long_poll_read=77.0)
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
NOW_HEADER = "Wed, 04 Mar 2026 05:06:07 -0000"
TXID = "f50324f8-42ce-419d-8403-ed6b78e72d44"
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
PUSH_ALICE = AuthRequest(Factor.PUSH, username="alice")
ALLOW = {"result": "allow", "status": "allow", "status_msg": "OK", "trusted_device_token": "tdt"}
WAITING = {"result": "waiting", "status": "pushed", "status_msg": "Pushed"}
ENROLLMENT = {
    "activation_barcode": f"https://{HOST}/frame/qr?value=abc",
    "activation_code": "duo://abc",
    "expiration": 1772600000,
    "user_id": "DU94SWSN4ADHHJHF2HXT",
    "username": "alice",
    "bypass_codes": ["123456", "654321"],
}
PHONE = {"device": "DP1", "type": "phone", "name": "iPhone", "number": "XXX-XXX-4788"}
PHONE_CAPS = ["auto", "push", "sms", "phone", "mobile_otp", "future_thing"]
TOKEN = {"device": "DH2", "type": "token", "name": "YubiKey"}  # no `capabilities`, as in real logs
PREAUTH = {
    "result": "auth",
    "status_msg": "Account is active",
    "devices": [{**PHONE, "capabilities": PHONE_CAPS, "sms_nextcode": "7"}, TOKEN],
}


def ok(response: object) -> httpx.Response:
    return httpx.Response(200, json={"stat": "OK", "response": response})


def fail(status: int, code: int | str, message: str, detail: str | None = None) -> httpx.Response:
    body = {"stat": "FAIL", "code": code, "message": message, "message_detail": detail}
    return httpx.Response(status, json={k: v for k, v in body.items() if v is not None})


RATE_LIMITED = fail(429, 42901, "Too Many Requests")
PNG_ANSWER = httpx.Response(200, headers={"Content-Type": "image/png"}, content=PNG)


class FakeDuo:
    """Records each request; answers from `answers` in order, repeating the last one."""

    def __init__(self, answers: tuple[httpx.Response | Exception, ...]) -> None:
        self.answers = answers or (ok({"time": 1}),)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@dataclass(frozen=True)
class Rig:
    duo: FakeDuo
    client: DuoAuthClient
    sleeps: list[float]


def rig(
    *answers: httpx.Response | Exception,
    sig_version: Literal[2, 5] = 5,
    now: Callable[[], datetime] = lambda: NOW,
) -> Rig:
    """A client wired to a FakeDuo (MockTransport holds no sockets, so nothing needs closing)."""
    duo = FakeDuo(answers)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = DuoAuthClient(
        httpx.AsyncClient(transport=httpx.MockTransport(duo)),
        credentials=DuoCredentials(IKEY, SKEY),
        endpoint=DuoEndpoint(signed_host=HOST, base_url=f"https://{HOST}"),
        timeouts=TIMEOUTS,
        sig_version=sig_version,
        now=now,
        sleep=sleep,
        jitter=lambda: 0.5,
    )
    return Rig(duo, client, sleeps)


def sent_params(request: httpx.Request) -> dict[str, str]:
    if request.method == "GET":
        return dict(request.url.params)
    if request.headers["Content-Type"] == "application/json":
        decoded: dict[str, str] = json.loads(request.content)
        return decoded
    return dict(urllib.parse.parse_qsl(request.content.decode("ascii"), keep_blank_values=True))


def qs(text: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(text))


def assert_signature_valid(request: httpx.Request, sig_version: Literal[2, 5] = 5) -> None:
    """Recomputes the signature from what reached the server and compares it with the header."""
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    ikey, _, sent_hex = base64.b64decode(token).decode("ascii").partition(":")
    assert ikey == IKEY
    json_post = sig_version == 5 and request.method == "POST"
    params = {} if json_post else {k: [v] for k, v in sent_params(request).items()}
    canonical = CanonicalRequest(
        date=request.headers["Date"],
        method=request.method,
        host=request.headers["Host"],
        path=request.url.path,
        params=params,
        body=request.content if json_post else b"",
    )
    assert sent_hex == signature(SKEY, canonical.text(sig_version), Digest.SHA512)


Invoke = Callable[[DuoAuthClient], Awaitable[object]]
INVOKE: dict[str, Invoke] = {
    "check": lambda c: c.check(),
    "logo": lambda c: c.logo(),
    "enroll": lambda c: c.enroll(username="al", valid_secs=600, bypass_codes=2),
    "enroll_status": lambda c: c.enroll_status(user_id="U", activation_code="C"),
    "preauth": lambda c: c.preauth(username="alice", ipaddr="203.0.113.5"),
    "auth": lambda c: c.auth(PUSH_ALICE),
    "start_auth": lambda c: c.start_auth(PUSH_ALICE),
    "auth_status": lambda c: c.auth_status(TXID),
}
PUSH_WIRE = "username=alice&factor=push&device=auto&async="
WIRE = {  # call: (Duo's answer, "METHOD path", the parameters Duo must receive)
    "check": (ok({"time": 1}), "GET /auth/v2/check", ""),
    "logo": (PNG_ANSWER, "GET /auth/v2/logo", ""),
    "enroll": (ok(ENROLLMENT), "POST /auth/v2/enroll", "username=al&valid_secs=600&bypass_codes=2"),
    "enroll_status": (ok("waiting"), "POST /auth/v2/enroll_status", "user_id=U&activation_code=C"),
    "preauth": (ok(PREAUTH), "POST /auth/v2/preauth", "username=alice&ipaddr=203.0.113.5"),
    "auth": (ok(ALLOW), "POST /auth/v2/auth", PUSH_WIRE + "0"),
    "start_auth": (ok({"txid": TXID}), "POST /auth/v2/auth", PUSH_WIRE + "1"),
    "auth_status": (ok(WAITING), "GET /auth/v2/auth_status", f"txid={TXID}"),
}
each_call = pytest.mark.parametrize("name", list(INVOKE))


@each_call
@pytest.mark.parametrize("sig_version", [5, 2])
async def test_each_signed_call_sends_method_path_params_and_a_valid_signature(
    name: str, sig_version: Literal[2, 5]
) -> None:
    answer, target, params = WIRE[name]
    made = rig(answer, sig_version=sig_version)
    await INVOKE[name](made.client)
    request = made.duo.last
    assert f"{request.method} {request.url.path}" == target
    assert request.url.host == HOST
    assert request.headers["Date"] == NOW_HEADER
    assert request.headers["User-Agent"] == "twofa-duo/0.1"
    assert sent_params(request) == qs(params)
    if request.method == "GET":
        assert request.content == b""
    elif sig_version == 5:  # a compact, sorted-key JSON body and nothing in the query
        assert request.headers["Content-Type"] == "application/json"
        compact = json.dumps(qs(params), sort_keys=True, separators=(",", ":"))
        assert (request.content, request.url.query) == (compact.encode("ascii"), b"")
    else:
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert request.url.query == b""
    assert_signature_valid(request, sig_version)


@each_call
async def test_long_polls_use_long_poll_read_timeout_and_other_calls_the_normal_one(
    name: str,
) -> None:
    made = rig(WIRE[name][0])
    await INVOKE[name](made.client)
    timeout = made.duo.last.extensions["timeout"]
    assert timeout["read"] == (77.0 if name in ("auth", "auth_status") else 11.0)
    assert timeout["connect"] == 3.0


async def test_ping_is_an_unsigned_get_returning_duo_time() -> None:
    made = rig(ok({"time": 1772600000}))
    assert await made.client.ping() == 1772600000
    request = made.duo.last
    assert (request.method, request.url.path) == ("GET", "/auth/v2/ping")
    assert "Authorization" not in request.headers
    assert "Date" not in request.headers


async def test_preauth_parses_devices_capabilities_and_token_without_capabilities() -> None:
    made = rig(ok(PREAUTH))
    preauth = await made.client.preauth(username="alice", ipaddr="203.0.113.5")
    assert made.duo.last.content == b'{"ipaddr":"203.0.113.5","username":"alice"}'
    assert (preauth.outcome, preauth.status_msg) == (PreauthOutcome.AUTH, "Account is active")
    phone, token = preauth.devices
    assert (phone.device_id, phone.type, phone.name) == ("DP1", DeviceType.PHONE, "iPhone")
    assert (phone.number, phone.sms_nextcode) == ("XXX-XXX-4788", "7")
    assert phone.capabilities == frozenset(Capability)  # the unknown "future_thing" is dropped
    assert (token.device_id, token.type, token.capabilities) == ("DH2", DeviceType.TOKEN, set())
    assert preauth.push_devices == (phone,)


async def test_preauth_by_user_id_sends_every_given_optional_field() -> None:
    made = rig(ok({"result": "enroll", "status_msg": "Enroll", "enroll_portal_url": "https://p"}))
    preauth = await made.client.preauth(
        user_id="DU1", ipaddr="198.51.100.1", hostname="ws-1", trusted_device_token="tdt"
    )
    assert (preauth.outcome, preauth.enroll_portal_url) == (PreauthOutcome.ENROLL, "https://p")
    expected = "user_id=DU1&ipaddr=198.51.100.1&hostname=ws-1&trusted_device_token=tdt"
    assert sent_params(made.duo.last) == qs(expected)


async def test_enroll_parses_enrollment_and_sends_empty_object_without_arguments() -> None:
    made = rig(ok(ENROLLMENT))
    enrollment = await made.client.enroll()
    assert made.duo.last.content == b"{}"
    assert enrollment == Enrollment(
        user_id="DU94SWSN4ADHHJHF2HXT",
        username="alice",
        activation_code="duo://abc",
        activation_barcode=f"https://{HOST}/frame/qr?value=abc",
        expires_at=1772600000,
        bypass_codes=("123456", "654321"),
    )


@pytest.mark.parametrize("status", list(EnrollmentStatus), ids=lambda s: s.value)
async def test_enroll_status_parses_the_bare_string(status: EnrollmentStatus) -> None:
    client = rig(ok(status.value)).client
    assert await client.enroll_status(user_id="DU1", activation_code="c") is status


async def test_sync_auth_returns_outcome_with_trusted_device_token() -> None:
    outcome = await rig(ok(ALLOW)).client.auth(PUSH_ALICE)
    assert (outcome.result, outcome.status) == (AuthResult.ALLOW, TransactionStatus.ALLOW)
    assert (outcome.status_msg, outcome.trusted_device_token) == ("OK", "tdt")
    assert outcome.is_final


async def test_start_auth_returns_txid_and_auth_status_parses_waiting() -> None:
    assert await rig(ok({"txid": TXID})).client.start_auth(PUSH_ALICE) == TXID
    outcome = await rig(ok(WAITING)).client.auth_status(TXID)
    assert (outcome.result, outcome.status) == (AuthResult.WAITING, TransactionStatus.PUSHED)
    assert (outcome.trusted_device_token, outcome.is_final) == (None, False)


async def test_passcode_factor_sends_passcode_and_never_device() -> None:
    made = rig(ok(ALLOW))
    push = PushRequest("DP1", "Acme Login")
    await made.client.auth(AuthRequest(Factor.PASSCODE, username="al", passcode="123", push=push))
    assert sent_params(made.duo.last) == qs("username=al&factor=passcode&async=0&passcode=123")


async def test_push_sends_device_type_display_username_urlencoded_pushinfo_and_ipaddr() -> None:
    made = rig(ok({"txid": TXID}))
    push = PushRequest("DP1", "Acme Login", "Alice A.", (("from", "web app"), ("ip", "1.2.3.4")))
    await made.client.start_auth(AuthRequest(Factor.PUSH, user_id="DU1", push=push, ipaddr="::1"))
    assert sent_params(made.duo.last) == {
        "user_id": "DU1",
        "factor": "push",
        "async": "1",
        "device": "DP1",
        "type": "Acme Login",
        "display_username": "Alice A.",
        "pushinfo": "from=web+app&ip=1.2.3.4",
        "ipaddr": "::1",
    }


@pytest.mark.parametrize("factor", [Factor.PHONE, Factor.SMS])
async def test_phone_and_sms_send_device_but_no_push_fields(factor: Factor) -> None:
    made = rig(ok({"txid": TXID}))
    push = PushRequest("DP1", "Acme Login", "Alice A.", (("k", "v"),))
    await made.client.start_auth(AuthRequest(factor, username="al", push=push))
    expected = {"username": "al", "factor": factor.value, "async": "1", "device": "DP1"}
    assert sent_params(made.duo.last) == expected


@pytest.mark.parametrize(
    "invoke",
    [
        pytest.param(lambda c: c.auth(AuthRequest(Factor.PUSH)), id="auth-neither"),
        pytest.param(
            lambda c: c.start_auth(AuthRequest(Factor.PUSH, username="a", user_id="U")), id="both"
        ),
        pytest.param(lambda c: c.preauth(), id="preauth-neither"),
        pytest.param(lambda c: c.preauth(username="a", user_id="U"), id="preauth-both"),
        pytest.param(lambda c: c.auth(AuthRequest(Factor.PASSCODE, username="a")), id="no-code"),
    ],
)
async def test_bad_user_or_passcode_arguments_raise_value_error_before_any_request(
    invoke: Invoke,
) -> None:
    made = rig()
    with pytest.raises(ValueError, match=r"username or user_id|passcode"):
        await invoke(made.client)
    assert made.duo.requests == []


@pytest.mark.parametrize(
    ("answer", "fields", "bad_credentials"),
    [
        (fail(400, 40002, "Invalid", "device"), (400, 40002, "Invalid", "device"), False),
        (fail(401, "40103", "Invalid signature"), (401, 40103, "Invalid signature", None), True),
        (httpx.Response(401), (401, None, "Unauthorized", None), True),
        (fail(500, 50000, "Internal error"), (500, 50000, "Internal error", None), False),
        (httpx.Response(502, text="<html>proxy</html>"), (502, None, "Bad Gateway", None), False),
    ],
    ids=["400-envelope", "401-string-code", "bare-401", "500", "502-html"],
)
async def test_error_answer_raises_api_error_with_status_code_message_and_detail(
    answer: httpx.Response, fields: tuple[object, ...], bad_credentials: bool
) -> None:
    with pytest.raises(DuoApiError) as caught:
        await rig(answer).client.start_auth(PUSH_ALICE)
    error = caught.value
    assert (error.http_status, error.code, error.message, error.detail) == fields
    assert error.is_bad_credentials is bad_credentials
    server_side = error.http_status >= 500  # only those are "Duo could not be asked"
    assert isinstance(error, DuoServerError) is server_side
    assert isinstance(error, DuoUnavailable) is server_side


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(httpx.Response(200, text="<html>proxy login</html>"), id="html"),
        pytest.param(httpx.Response(200, content=b"\xff\xfe\x00garbage"), id="binary"),
        pytest.param(httpx.Response(200, json={"response": {"time": 1}}), id="no-stat"),
        pytest.param(httpx.Response(200, json={"stat": "MAYBE", "response": {}}), id="odd-stat"),
        pytest.param(httpx.Response(200, json={"stat": "OK"}), id="no-response"),
        pytest.param(httpx.Response(200, json=["stat", "OK"]), id="list"),
    ],
)
async def test_200_that_is_not_an_ok_envelope_raises_malformed_response(
    answer: httpx.Response,
) -> None:
    with pytest.raises(DuoMalformedResponse):
        await rig(answer).client.check()


@pytest.mark.parametrize(
    ("invoke", "response"),
    [
        pytest.param(lambda c: c.preauth(username="a"), {"result": "maybe"}, id="preauth-result"),
        pytest.param(lambda c: c.preauth(user_id="U"), {**PREAUTH, "devices": {}}, id="devs"),
        pytest.param(lambda c: c.preauth(username="a"), {**PREAUTH, "devices": [{}]}, id="device"),
        pytest.param(lambda c: c.start_auth(PUSH_ALICE), {}, id="missing-txid"),
        pytest.param(lambda c: c.enroll_status(user_id="U", activation_code="c"), "bogus", id="es"),
        pytest.param(lambda c: c.enroll(), {"username": "alice"}, id="enroll"),
        pytest.param(lambda c: c.check(), {"time": "soon"}, id="time"),
        pytest.param(lambda c: c.auth_status(TXID), {"result": "allow"}, id="missing-status"),
        pytest.param(lambda c: c.auth(PUSH_ALICE), ["allow"], id="auth-list"),
    ],
)
async def test_ok_envelope_with_wrong_shape_raises_malformed_response(
    invoke: Invoke, response: object
) -> None:
    with pytest.raises(DuoMalformedResponse):
        await invoke(rig(ok(response)).client)


@pytest.mark.parametrize("kind", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_transport_timeout_raises_duo_timeout(kind: type[httpx.TimeoutException]) -> None:
    with pytest.raises(DuoTimeout) as caught:
        await rig(kind("too slow")).client.auth_status(TXID)
    assert isinstance(caught.value.__cause__, kind)


async def test_connect_error_raises_transport_error_that_is_not_a_timeout() -> None:
    with pytest.raises(DuoTransportError) as caught:
        await rig(httpx.ConnectError("connection refused")).client.ping()
    assert not isinstance(caught.value, DuoTimeout)
    assert "ConnectError" in str(caught.value)


def test_error_hierarchy_separates_unavailable_from_refused() -> None:
    assert DuoTimeout.__mro__[1:4] == (DuoTransportError, DuoUnavailable, DuoError)
    assert issubclass(DuoMalformedResponse, DuoUnavailable)
    for kind in (DuoServerError, DuoRateLimited):
        assert {DuoApiError, DuoUnavailable} <= set(kind.__mro__)
    assert not issubclass(DuoApiError, DuoUnavailable)


@pytest.mark.parametrize(
    ("limited", "delays"), [(1, [1.5]), (3, [1.5, 2.5, 4.5]), (6, [1.5, 2.5, 4.5, 8.5, 16.5, 32.5])]
)
async def test_rate_limited_call_retries_with_doubling_delays_then_succeeds(
    limited: int, delays: list[float]
) -> None:
    made = rig(*[RATE_LIMITED] * limited, ok({"time": 42}))
    assert await made.client.check() == 42
    assert made.sleeps == delays
    assert len(made.duo.requests) == limited + 1


async def test_rate_limited_call_backs_off_1_2_4_to_32_seconds_then_raises() -> None:
    made = rig(RATE_LIMITED)
    with pytest.raises(DuoRateLimited) as caught:
        await made.client.preauth(username="alice")
    assert len(made.duo.requests) == 7
    assert made.sleeps == [1.5, 2.5, 4.5, 8.5, 16.5, 32.5]
    assert (caught.value.http_status, caught.value.code) == (429, 42901)
    assert isinstance(caught.value, DuoUnavailable)


async def test_each_retry_is_signed_afresh_with_the_current_date() -> None:
    moments = iter(NOW + timedelta(seconds=10 * i) for i in range(10))
    made = rig(RATE_LIMITED, RATE_LIMITED, ok({"txid": TXID}), now=lambda: next(moments))
    assert await made.client.start_auth(PUSH_ALICE) == TXID
    assert [request.headers["Date"] for request in made.duo.requests] == [
        "Wed, 04 Mar 2026 05:06:07 -0000",
        "Wed, 04 Mar 2026 05:06:17 -0000",
        "Wed, 04 Mar 2026 05:06:27 -0000",
    ]
    assert len({request.headers["Authorization"] for request in made.duo.requests}) == 3
    for request in made.duo.requests:
        assert_signature_valid(request)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(fail(400, 40002, "Invalid request parameters"), id="400"),
        pytest.param(fail(401, 40103, "Invalid signature"), id="401"),
        pytest.param(fail(500, 50000, "Internal error"), id="500"),
        pytest.param(httpx.Response(503), id="503"),
    ],
)
async def test_errors_other_than_429_are_never_retried(answer: httpx.Response) -> None:
    made = rig(answer, ok({"time": 1}))
    with pytest.raises(DuoApiError):
        await made.client.check()
    assert len(made.duo.requests) == 1
    assert made.sleeps == []


async def test_unsigned_ping_is_also_retried_on_429() -> None:
    made = rig(RATE_LIMITED, ok({"time": 7}))
    assert await made.client.ping() == 7
    assert made.sleeps == [1.5]


async def test_logo_returns_png_bytes() -> None:
    assert await rig(PNG_ANSWER).client.logo() == PNG


async def test_logo_fail_envelope_raises_api_error() -> None:
    with pytest.raises(DuoApiError) as caught:
        await rig(fail(400, 40002, "Logo not found")).client.logo()
    assert (caught.value.http_status, caught.value.code) == (400, 40002)
    assert caught.value.message == "Logo not found"


async def test_logo_200_that_is_not_an_image_raises_malformed_response() -> None:
    with pytest.raises(DuoMalformedResponse, match="not an image"):
        await rig(ok({"logo": "none"})).client.logo()

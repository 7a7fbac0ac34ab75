"""The proof of Duo keys before they are saved (`prove_duo_keys`), against hosts that answer
what a test wants: Duo's own answers give the admin one fixed text per kind of failure, and
whatever a foreign host answers (its body, status text, headers) reaches the log only, never
the admin: an admin session must not become a way to read or port-scan the internal network."""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable

import httpx
import pytest

from twofa.services.settings.duo import (
    CANNOT_CONNECT,
    KEYS_REFUSED,
    NOT_DUO,
    TLS_REFUSED,
    prove_duo_keys,
)

IKEY = "DIWJ8X6AEYOR5OMC6TQ1"
SKEY = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"
DUO_HOST = "api-1234abcd.duosecurity.com"
FOREIGN = "https://internal.example:8443"
SECRET = "INTERNAL-SECRET-7f3a"  # what an internal service would give away
Handler = Callable[[httpx.Request], httpx.Response]


def duo_answer(response: object) -> httpx.Response:
    return httpx.Response(200, json={"stat": "OK", "response": response})


def ping_ok_then(check: httpx.Response) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/v2/ping":
            return duo_answer({"time": int(time.time())})
        return check

    return answer


def duo_failure(status: int, code: int, message: str = "a Duo message") -> httpx.Response:
    return httpx.Response(status, json={"stat": "FAIL", "code": code, "message": message})


async def prove(handler: Handler, host: str = DUO_HOST, *, custom: bool = False) -> dict[str, str]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        return await prove_duo_keys(http, IKEY, SKEY, host, time.time(), allow_custom_host=custom)


FOREIGN_ANSWERS: dict[str, Handler] = {
    "a web page": lambda _: httpx.Response(
        200, text=f"<h1>{SECRET}</h1>", headers={"X-Banner": SECRET}
    ),
    "an error with a status text": lambda _: httpx.Response(
        500,
        json={"stat": "FAIL", "code": 50000, "message": SECRET, "message_detail": SECRET},
        extensions={"reason_phrase": SECRET.encode()},
    ),
    "a redirect inward": lambda _: httpx.Response(
        302, headers={"Location": f"http://10.0.0.1/{SECRET}"}, text=SECRET
    ),
    "a refused check with a message": ping_ok_then(duo_failure(400, 40002, SECRET)),
    "a refused signature with a message": ping_ok_then(duo_failure(401, 40101, SECRET)),
    "a check that is not JSON": ping_ok_then(httpx.Response(200, text=SECRET)),
}


@pytest.mark.parametrize("answer", FOREIGN_ANSWERS.values(), ids=FOREIGN_ANSWERS.keys())
async def test_attack_what_a_foreign_host_answers_is_never_shown(answer: Handler) -> None:
    problems = await prove(answer, FOREIGN, custom=True)

    assert problems  # not a Duo that knows these keys
    assert SECRET not in json.dumps(problems)
    fixed = {NOT_DUO.format(host="internal.example:8443"), KEYS_REFUSED}
    assert set(problems.values()) <= fixed


async def test_what_the_host_answered_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="twofa.services.settings.duo")

    await prove(FOREIGN_ANSWERS["a web page"], FOREIGN, custom=True)

    assert SECRET in caplog.text
    assert "internal.example:8443" in caplog.text


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"[Errno 111] Connection refused {SECRET}", request=request)


def silent(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout(SECRET, request=request)


def bad_certificate(request: httpx.Request) -> httpx.Response:
    try:
        raise ssl.SSLCertVerificationError(f"certificate verify failed: {SECRET}")
    except ssl.SSLError as cause:
        raise httpx.ConnectError(str(cause), request=request) from cause


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (unreachable, {"api_hostname": CANNOT_CONNECT.format(host=DUO_HOST)}),
        (silent, {"api_hostname": CANNOT_CONNECT.format(host=DUO_HOST)}),
        (bad_certificate, {"api_hostname": TLS_REFUSED.format(host=DUO_HOST)}),
        (
            lambda _: httpx.Response(200, text="hello"),
            {"api_hostname": NOT_DUO.format(host=DUO_HOST)},
        ),
        (
            ping_ok_then(duo_failure(503, 50301)),
            {"api_hostname": NOT_DUO.format(host=DUO_HOST)},
        ),
        (ping_ok_then(duo_failure(401, 40102)), {"ikey": "Duo does not know this integration key"}),
        (
            ping_ok_then(duo_failure(401, 40103)),
            {"skey": "Duo refused the signature: the secret key is wrong"},
        ),
        (ping_ok_then(duo_failure(401, 40101)), {"ikey": KEYS_REFUSED}),
    ],
    ids=["refused", "timeout", "tls", "not-duo", "duo-5xx", "ikey", "skey", "other-401"],
)
async def test_each_kind_of_failure_has_its_fixed_words(
    answer: Handler, expected: dict[str, str]
) -> None:
    assert await prove(answer) == expected


async def test_working_keys_are_proven() -> None:
    assert await prove(ping_ok_then(duo_answer({"time": int(time.time())}))) == {}


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:6379", FOREIGN, "api-x.duosecurity.com.evil.test"]
)
async def test_attack_a_host_that_is_not_duos_is_never_dialled(host: str) -> None:
    dialled: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        dialled.append(request)
        return httpx.Response(200, text=SECRET)

    problems = await prove(record, host, custom=False)

    assert dialled == []
    assert set(problems) == {"api_hostname"}
    assert "is not a Duo API host" in problems["api_hostname"]
    assert "duo.allow_custom_host" in problems["api_hostname"]

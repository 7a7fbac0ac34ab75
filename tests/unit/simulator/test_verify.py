"""The simulator's signature check, fed with requests built by the client's own signer."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from twofa.duo.signing import (
    CanonicalRequest,
    Digest,
    SignedRequest,
    authorization_header,
    sign_request,
    signature,
)
from twofa.simulator.errors import DuoFailure
from twofa.simulator.verify import (
    ReceivedRequest,
    VerifiedRequest,
    candidate_hosts,
    check_date,
    verify_request,
)

IKEY = "DIWJ8X6AEYOR5OMC6TQ1"
SKEY = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep"
HOST = "api-xxxxxxxx.duosecurity.com"
NOW = 1_800_000_000.0
DATE = email.utils.formatdate(NOW, usegmt=True)  # "GMT": zone-aware whatever the local TZ


def signed(
    method: str = "POST",
    path: str = "/auth/v2/auth",
    params: Mapping[str, Any] | None = None,
    *,
    host: str = HOST,
    skey: str = SKEY,
    date: str = DATE,
    **options: Any,
) -> SignedRequest:
    return sign_request(
        ikey=IKEY,
        skey=skey,
        host=host,
        method=method,
        path=path,
        params=params if params is not None else {"username": "jdoe", "factor": "push"},
        date=date,
        **options,
    )


def received(request: SignedRequest, host_header: str = HOST) -> ReceivedRequest:
    path, _, query = request.target.partition("?")
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = host_header
    return ReceivedRequest(request.method, path, query, request.body, headers)


def verify(
    request: ReceivedRequest, *, api_hostname: str | None = None, now: float = NOW
) -> VerifiedRequest:
    return verify_request(request, secret_for={IKEY: SKEY}, api_hostname=api_hostname, now=now)


def failure_code(request: ReceivedRequest, **kwargs: Any) -> int:
    with pytest.raises(DuoFailure) as caught:
        verify(request, **kwargs)
    return caught.value.code


def with_headers(request: ReceivedRequest, **changes: str | None) -> ReceivedRequest:
    headers = dict(request.headers)
    for name, value in changes.items():
        key = name.replace("_", "-")
        if value is None:
            headers.pop(key, None)
        else:
            headers[key] = value
    return dataclasses.replace(request, headers=headers)


@pytest.fixture
def non_utc_local_time() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "EST+05"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_v5_json_post_is_accepted() -> None:
    request = received(signed("POST"))
    assert request.is_json
    verified = verify(request)
    assert verified.ikey == IKEY
    assert verified.get("username") == "jdoe"
    assert verified.get("factor") == "push"


def test_v5_get_is_accepted() -> None:
    request = received(signed("GET", "/auth/v2/auth_status", {"txid": "abc-123"}))
    assert request.query == "txid=abc-123"
    assert verify(request).get("txid") == "abc-123"


def test_v2_sha512_form_post_is_accepted() -> None:
    request = received(signed("POST", "/auth/v2/preauth", {"username": "jdoe"}, sig_version=2))
    assert not request.is_json
    assert request.body == b"username=jdoe"
    assert verify(request).get("username") == "jdoe"


def test_v2_sha1_is_accepted() -> None:
    request = received(
        signed("GET", "/auth/v2/check", {"a": "1"}, sig_version=2, digest=Digest.SHA1)
    )
    given = base64.b64decode(request.headers["authorization"].split()[1]).decode()
    assert len(given.split(":")[1]) == 40
    assert verify(request).get("a") == "1"


def test_v1_without_date_line_is_accepted() -> None:
    params = {"username": ["jdoe"]}
    canonical = CanonicalRequest(DATE, "POST", HOST, "/auth/v2/preauth", params)
    hex_signature = signature(SKEY, canonical.text(1), Digest.SHA512)
    headers = {
        "authorization": authorization_header(IKEY, hex_signature),
        "date": DATE,
        "content-type": "application/x-www-form-urlencoded",
        "host": HOST,
    }
    request = ReceivedRequest("POST", "/auth/v2/preauth", "", b"username=jdoe", headers)
    assert verify(request).get("username") == "jdoe"


def test_x_duo_date_is_preferred_over_date() -> None:
    request = received(signed(date_header="X-Duo-Date"))
    assert "x-duo-date" in request.headers
    stale = email.utils.formatdate(NOW - 3600)
    assert verify(with_headers(request, date=stale)).ikey == IKEY
    assert check_date(with_headers(request, date=stale).headers, NOW, 300) == DATE


def test_x_duo_headers_are_covered_by_the_v5_hash() -> None:
    request = received(signed(x_duo_headers={"X-Duo-Test": "one"}))
    assert verify(request).ikey == IKEY
    assert failure_code(with_headers(request, x_duo_test="two")) == 40103
    assert failure_code(with_headers(request, x_duo_extra="added")) == 40103


@pytest.mark.parametrize("signed_host", ["sim.test:8443", "sim.test"])
def test_host_with_or_without_port_is_accepted(signed_host: str) -> None:
    request = received(signed(host=signed_host), host_header="sim.test:8443")
    assert verify(request).ikey == IKEY


def test_configured_api_hostname_is_accepted() -> None:
    request = received(signed(host=HOST), host_header="127.0.0.1:9999")
    assert failure_code(request) == 40103
    assert verify(request, api_hostname=HOST).ikey == IKEY


def test_a_different_host_is_refused() -> None:
    request = received(signed(host="evil.example"), host_header=HOST)
    assert failure_code(request, api_hostname=HOST) == 40103


def test_candidate_hosts_lists_configured_then_header_with_and_without_port() -> None:
    assert candidate_hosts({"host": "Sim.Test:8443"}, "API.example") == [
        "api.example",
        "sim.test:8443",
        "sim.test",
    ]
    assert candidate_hosts({"host": "sim.test"}, "sim.test") == ["sim.test"]
    assert candidate_hosts({"host": "[::1]"}, None) == ["[::1]"]
    assert candidate_hosts({"host": "[::1]:8443"}, None) == ["[::1]:8443", "[::1]"]
    assert candidate_hosts({}, None) == []


def test_tampered_body_byte_is_refused() -> None:
    request = received(signed())
    body = request.body.replace(b"jdoe", b"jdoa")
    assert body != request.body
    assert failure_code(dataclasses.replace(request, body=body)) == 40103


def test_tampered_query_parameter_is_refused() -> None:
    request = received(signed("GET", "/auth/v2/auth_status", {"txid": "abc-123"}))
    assert failure_code(dataclasses.replace(request, query="txid=abc-124")) == 40103


def test_tampered_form_parameter_is_refused() -> None:
    request = received(signed("POST", "/auth/v2/preauth", {"username": "jdoe"}, sig_version=2))
    assert failure_code(dataclasses.replace(request, body=b"username=root")) == 40103


def test_non_utf8_form_body_is_refused_not_crashed() -> None:
    request = received(signed("POST", "/auth/v2/preauth", {"username": "jdoe"}, sig_version=2))
    assert failure_code(dataclasses.replace(request, body=b"username=jd\xffe")) in (40002, 40103)


def test_wrong_skey_is_refused() -> None:
    assert failure_code(received(signed(skey="not-the-secret-key"))) == 40103


def test_unknown_ikey_is_refused() -> None:
    request = received(signed())
    with pytest.raises(DuoFailure) as caught:
        verify_request(request, secret_for={"DIOTHER": SKEY}, api_hostname=None, now=NOW)
    assert caught.value.code == 40102
    assert caught.value.http_status == 401


def test_missing_authorization_is_refused() -> None:
    assert failure_code(with_headers(received(signed()), authorization=None)) == 40101


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abcdef",
        "Basic !!!not-base64!!!",
        "Basic",
        f"Basic {base64.b64encode(b'nocolon').decode()}",
    ],
)
def test_malformed_authorization_is_refused(header: str) -> None:
    assert failure_code(with_headers(received(signed()), authorization=header)) == 40101


def test_missing_date_is_refused() -> None:
    request = with_headers(received(signed()), date=None)
    with pytest.raises(DuoFailure) as caught:
        verify(request)
    assert caught.value.code == 40101
    assert caught.value.detail == "Missing request timestamp"


@pytest.mark.parametrize("offset", [-301, 301])
def test_date_outside_window_is_refused(offset: float) -> None:
    request = received(signed())
    with pytest.raises(DuoFailure) as caught:
        verify(request, now=NOW - offset)
    assert caught.value.code == 40103
    assert caught.value.http_status == 401
    assert caught.value.detail is not None
    assert "300" in caught.value.detail


@pytest.mark.parametrize("offset", [-299, 299])
def test_date_inside_window_is_accepted(offset: float) -> None:
    assert verify(received(signed()), now=NOW + offset).ikey == IKEY


def test_unreadable_date_is_refused() -> None:
    with pytest.raises(DuoFailure) as caught:
        check_date({"date": "yesterday-ish"}, NOW, 300)
    assert caught.value.code == 40103


@pytest.mark.usefixtures("non_utc_local_time")
def test_minus_zero_zone_date_is_utc_whatever_the_local_zone() -> None:
    date = email.utils.formatdate(NOW)
    assert date.endswith("-0000")
    assert check_date({"date": date}, NOW, 300) == date


def test_signature_of_odd_length_is_refused() -> None:
    token = base64.b64encode(f"{IKEY}:abc".encode()).decode()
    assert failure_code(with_headers(received(signed()), authorization=f"Basic {token}")) == 40103


def test_plus_on_the_wire_decodes_to_space() -> None:
    request = received(signed("GET", "/auth/v2/check", {"q": "a b/c~é", "z": ["2", "10"]}))
    assert "q=a+b" in request.query
    verified = verify(request)
    assert verified.get("q") == "a b/c~é"
    assert list(verified.params["z"]) == ["2", "10"]


def test_json_body_is_decoded_to_strings() -> None:
    params = {"display_username": "Zoë", "client_supports_verified_push": True, "n": 5}
    request = received(signed("POST", "/auth/v2/preauth", params))
    assert b"\\u00eb" in request.body
    verified = verify(request)
    assert verified.get("display_username") == "Zoë"
    assert verified.get("client_supports_verified_push") == "true"
    assert verified.get("n") == "5"
    assert verified.get("absent") is None

"""Known-answer tests for Duo request signing (vectors in tests/data/duo_signing_vectors.json)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from twofa.duo.signing import (
    EMPTY_BODY_HASH,
    CanonicalRequest,
    Digest,
    SigningError,
    authorization_header,
    canon_params,
    canon_x_duo_headers,
    format_date,
    json_body,
    normalize_params,
    sign_request,
    signature,
)

VECTORS = json.loads((Path(__file__).parents[2] / "data" / "duo_signing_vectors.json").read_text())


def canonical_of(vector: dict[str, Any]) -> CanonicalRequest:
    return CanonicalRequest(
        date=vector["date"],
        method=vector["method"],
        host=vector["host"],
        path=vector["path"],
        params=vector["params"],
        body=vector["body"].encode(),
        x_duo_headers=vector["x_duo_headers"],
    )


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"][:3])
def test_known_vector_signature_matches(vector: dict[str, Any]) -> None:
    text = canonical_of(vector).text(vector["sig_version"])
    assert signature(vector["skey"], text, Digest(vector["digest"])) == vector["signature"]
    if "canonical" in vector:
        assert text == vector["canonical"]
    if "body_sha512" in vector:
        assert hashlib.sha512(vector["body"].encode()).hexdigest() == vector["body_sha512"]
    if "x_duo_headers_sha512" in vector:
        assert canon_x_duo_headers(vector["x_duo_headers"]) == vector["x_duo_headers_sha512"]
    if "authorization" in vector:
        header = authorization_header(vector["ikey"], vector["signature"])
        assert header == vector["authorization"]


@pytest.mark.parametrize("case", VECTORS["canon_params"], ids=lambda c: c["canonical"][:20])
def test_canon_params_matches_duo(case: dict[str, Any]) -> None:
    assert canon_params(case["params"]) == case["canonical"]


def test_sign_request_v5_post_reproduces_tv3_on_the_wire() -> None:
    tv3 = VECTORS["vectors"][3]
    request = sign_request(
        ikey=tv3["ikey"],
        skey=tv3["skey"],
        host=tv3["host"],
        method="POST",
        path="/auth/v2/auth",
        params={"factor": "push", "async": "1", "username": "jdoe", "device": "auto"},
        date=tv3["date"],
    )
    assert request.body == tv3["body"].encode()
    assert request.target == "/auth/v2/auth"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == authorization_header(tv3["ikey"], tv3["signature"])


def test_sign_request_v2_post_sends_a_form_body_and_signs_the_params() -> None:
    tv2 = VECTORS["vectors"][2]
    request = sign_request(
        ikey=tv2["ikey"],
        skey=tv2["skey"],
        host=tv2["host"],
        method="POST",
        path="/auth/v2/preauth",
        params={"username": "jdoe", "ipaddr": "203.0.113.5"},
        date=tv2["date"],
        sig_version=2,
    )
    assert request.body == b"username=jdoe&ipaddr=203.0.113.5"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    token = request.headers["Authorization"].removeprefix("Basic ")
    assert base64.b64decode(token).decode().split(":")[1] == tv2["signature"]


def test_get_puts_params_in_query_with_wire_encoding_not_signed_encoding() -> None:
    request = sign_request(
        ikey="DIXXXXXXXXXXXXXXXXXX",
        skey="s" * 40,
        host="api-x.duosecurity.com",
        method="GET",
        path="/auth/v2/auth_status",
        params={"q": "a b/c~é", "z": ["2", "10"]},
        date="Tue, 21 Aug 2012 17:29:18 -0000",
    )
    assert request.target == "/auth/v2/auth_status?q=a+b%2Fc~%C3%A9&z=2&z=10"
    assert request.body == b""


def test_get_without_params_keeps_trailing_question_mark() -> None:
    request = sign_request(
        ikey="DIXXXXXXXXXXXXXXXXXX",
        skey="s" * 40,
        host="h",
        method="GET",
        path="/auth/v2/check",
        params={},
        date="d",
    )
    assert request.target == "/auth/v2/check?"


def test_x_duo_date_is_sent_instead_of_date_and_folded_into_the_v5_hash() -> None:
    tv5 = VECTORS["vectors"][5]
    request = sign_request(
        ikey=tv5["ikey"],
        skey=tv5["skey"],
        host=tv5["host"],
        method="POST",
        path="/api/path",
        params={"foo": "bar"},
        date=tv5["date"],
        date_header="X-Duo-Date",
    )
    assert "Date" not in request.headers
    assert request.headers["X-Duo-Date"] == tv5["date"]
    assert request.headers["Authorization"].startswith("Basic RElBQkNERUZHSElKS0xNTk9QUVI6NjQzNzcw")


def test_v5_always_uses_sha512_even_if_sha1_is_asked() -> None:
    request = sign_request(
        ikey="I",
        skey="S",
        host="h",
        method="GET",
        path="/p",
        params={},
        date="d",
        digest=Digest.SHA1,
    )
    token = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert len(token.split(":")[1]) == Digest.SHA512.hex_length


@pytest.mark.parametrize(
    "headers",
    [{"X-Other": "v"}, {"X-Duo-A": "a\x00b"}, {"X-Duo-A": "1", "x-duo-a": "2"}],
    ids=["wrong-prefix", "nul", "duplicate"],
)
def test_invalid_x_duo_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(SigningError):
        canon_x_duo_headers(headers)


def test_x_duo_headers_in_v2_are_refused() -> None:
    with pytest.raises(SigningError):
        sign_request(
            ikey="I",
            skey="S",
            host="h",
            method="GET",
            path="/p",
            params={},
            date="d",
            sig_version=2,
            x_duo_headers={"X-Duo-A": "1"},
        )


def test_empty_headers_hash_is_the_empty_string_hash() -> None:
    assert canon_x_duo_headers({}) == EMPTY_BODY_HASH


def test_normalize_params_spells_booleans_and_ints_like_duo_client() -> None:
    assert normalize_params({"a": True, "b": False, "c": 5, "d": ["x", "y"], "e": "z"}) == {
        "a": ["true"],
        "b": ["false"],
        "c": ["5"],
        "d": ["x", "y"],
        "e": ["z"],
    }


def test_json_body_is_compact_sorted_and_ascii_escaped() -> None:
    assert json_body({"b": "Zoë", "a": "1"}) == b'{"a":"1","b":"Zo\\u00eb"}'


def test_format_date_is_rfc2822_utc_with_minus_zero_zone() -> None:
    moment = datetime(2012, 8, 21, 17, 29, 18, tzinfo=UTC)
    assert format_date(moment) == "Tue, 21 Aug 2012 17:29:18 -0000"


def test_v1_has_no_date_line() -> None:
    canonical = CanonicalRequest("d", "get", "H.example", "/p", {"a": ["1"]})
    assert canonical.text(1) == "GET\nh.example\n/p\na=1"
    assert canonical.text(2) == "d\nGET\nh.example\n/p\na=1"

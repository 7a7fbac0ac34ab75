"""Property tests: twofa signs every request exactly as the official `duo_client` 5.7.0 does."""

from __future__ import annotations

import hashlib

import duo_client.client as duo
from hypothesis import given, settings
from hypothesis import strategies as st

from twofa.duo.signing import (
    CanonicalRequest,
    Digest,
    canon_params,
    canon_x_duo_headers,
    json_body,
    sign_request,
)

# Any unicode except lone surrogates, which neither side can encode as UTF-8.
text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
reserved = st.sampled_from(["", " ", "+", "&", "=", "%", "~", "/", "*", "é", "日本", "a b", "%20"])
values = st.lists(text | reserved, min_size=1, max_size=4)
params = st.dictionaries(text | reserved, values, max_size=6)
header_names = st.from_regex(r"X-Duo-[A-Za-z0-9-]{1,10}", fullmatch=True)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
x_duo_headers = st.dictionaries(header_names, header_values, max_size=3).filter(
    lambda h: len({name.lower() for name in h}) == len(h)
)
methods = st.sampled_from(["GET", "POST", "DELETE", "PUT"])
hosts = st.sampled_from(["api-xxxxxxxx.duosecurity.com", "API-ABC.duosecurity.com", "127.0.0.1"])
DATE = "Tue, 21 Aug 2012 17:29:18 -0000"
IKEY = "DIWJ8X6AEYOR5OMC6TQ1"


@settings(max_examples=300)
@given(params)
def test_canon_params_equals_duo_client(given_params: dict[str, list[str]]) -> None:
    assert canon_params(given_params) == duo.canon_params(duo.normalize_params(given_params))


@settings(max_examples=200)
@given(methods, hosts, params, st.sampled_from([Digest.SHA1, Digest.SHA512]), text)
def test_v2_signature_equals_duo_client(
    method: str, host: str, given_params: dict[str, list[str]], digest: Digest, skey: str
) -> None:
    ours = sign_request(
        ikey=IKEY,
        skey=skey,
        host=host,
        method=method,
        path="/auth/v2/preauth",
        params=given_params,
        date=DATE,
        sig_version=2,
        digest=digest,
    )
    theirs = duo.sign(
        IKEY,
        skey,
        method,
        host,
        "/auth/v2/preauth",
        DATE,
        2,
        duo.normalize_params(given_params),
        digestmod=getattr(hashlib, digest.value),
    )
    assert ours.headers["Authorization"] == theirs


@settings(max_examples=200)
@given(methods, hosts, params, x_duo_headers, text)
def test_v5_signature_equals_duo_client(
    method: str,
    host: str,
    given_params: dict[str, list[str]],
    headers: dict[str, str],
    skey: str,
) -> None:
    ours = sign_request(
        ikey=IKEY,
        skey=skey,
        host=host,
        method=method,
        path="/auth/v2/auth",
        params=given_params,
        date=DATE,
        x_duo_headers=headers,
    )
    has_body = method in ("POST", "PUT", "PATCH")
    body = duo.Client.canon_json(given_params) if has_body else ""
    signed_params = {} if has_body else duo.normalize_params(given_params)
    theirs = duo.sign(
        IKEY,
        skey,
        method,
        host,
        "/auth/v2/auth",
        DATE,
        5,
        signed_params,
        body=body,
        additional_headers=headers,
    )
    assert ours.headers["Authorization"] == theirs
    if has_body:
        assert ours.body == body.encode()
        assert ours.body == json_body(given_params)


@settings(max_examples=100)
@given(x_duo_headers)
def test_x_duo_header_hash_equals_duo_client(headers: dict[str, str]) -> None:
    assert canon_x_duo_headers(headers) == duo.canon_x_duo_headers(headers)


@settings(max_examples=100)
@given(methods, hosts, params)
def test_canonical_text_equals_duo_client_for_v1_and_v2(
    method: str, host: str, given_params: dict[str, list[str]]
) -> None:
    normalized = duo.normalize_params(given_params)
    for version in (1, 2):  # the literal tuple keeps SigVersion
        ours = CanonicalRequest(DATE, method, host, "/p", given_params).text(version)
        assert ours == duo.canonicalize(method, host, "/p", normalized, DATE, version)

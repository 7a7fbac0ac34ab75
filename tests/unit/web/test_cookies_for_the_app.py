"""The Cookie header a protected application gets: the browser's, without twofa's session
and remembered-device cookies, however they are spelt in the header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import cookie_parser

from twofa.web.context import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    cookies_for_the_app,
    split_cookie_header,
)


@pytest.mark.parametrize(
    ("header", "for_the_app"),
    [
        ("", ""),
        ("JSESSIONID=abc", "JSESSIONID=abc"),
        (f"{SESSION_COOKIE}=s3cret", ""),
        (f"JSESSIONID=abc; {SESSION_COOKIE}=s3cret; seraph=1", "JSESSIONID=abc; seraph=1"),
        (f"{SESSION_COOKIE}=s3cret; {DEVICE_COOKIE}=d3vice; a=1", "a=1"),
        (f"a=1;{SESSION_COOKIE}=s3cret", "a=1"),
        (f"a=1;  {SESSION_COOKIE} =s3cret ;b=2", "a=1; b=2"),
        (f"{SESSION_COOKIE}=one; {SESSION_COOKIE}=two", ""),
        (
            f"my{SESSION_COOKIE}=kept; {SESSION_COOKIE}x=kept",
            f"my{SESSION_COOKIE}=kept; {SESSION_COOKIE}x=kept",
        ),
    ],
)
def test_twofas_cookies_are_taken_out(header: str, for_the_app: str) -> None:
    assert cookies_for_the_app(header) == for_the_app


@pytest.mark.parametrize(
    "header",
    [
        f"{SESSION_COOKIE}=s3cret",
        f" {SESSION_COOKIE}=s3cret",
        f"a=1;{SESSION_COOKIE}\t=s3cret",
        f'a=1; {SESSION_COOKIE}="s3cret"; b',
    ],
)
def test_attack_no_spelling_the_gateway_reads_as_its_session_reaches_the_app(header: str) -> None:
    assert SESSION_COOKIE in cookie_parser(header)  # the gateway would take it for a session
    assert SESSION_COOKIE not in cookie_parser(cookies_for_the_app(header))


_COOKIE_TEXT = st.lists(st.sampled_from([*' \t;="\\abc_07', "\\073"]), max_size=8).map("".join)
_COOKIE_VALUES = _COOKIE_TEXT | _COOKIE_TEXT.map(lambda text: f'"{text}"')  # quoted: unquoted
_COOKIE_NAMES = st.sampled_from([SESSION_COOKIE, DEVICE_COOKIE, "JSESSIONID", "", " a"])


@given(
    st.lists(
        st.tuples(_COOKIE_NAMES, st.sampled_from(["=", " = ", "", "=\t"]), _COOKIE_VALUES),
        max_size=6,
    ),
    st.sampled_from([";", "; ", " ;", ";;"]),
)
def test_the_session_token_is_read_exactly_as_the_routes_read_it(
    chunks: list[tuple[str, str, str]], separator: str
) -> None:
    """forward-auth and the CSRF check read the token with `split_cookie_header`, the routes
    with Starlette's `request.cookies`: they must never see two different sessions."""
    header = separator.join(name + equals + value for name, equals, value in chunks)
    assert split_cookie_header(header).session_token == cookie_parser(header).get(SESSION_COOKIE)
    assert SESSION_COOKIE not in cookie_parser(split_cookie_header(header).for_the_app)
    assert DEVICE_COOKIE not in cookie_parser(split_cookie_header(header).for_the_app)

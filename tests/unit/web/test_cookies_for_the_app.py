"""The Cookie header a protected application gets: the browser's, without twofa's session
and remembered-device cookies, however they are spelt in the header."""

from __future__ import annotations

import pytest
from starlette.requests import cookie_parser

from twofa.web.context import DEVICE_COOKIE, SESSION_COOKIE, cookies_for_the_app


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

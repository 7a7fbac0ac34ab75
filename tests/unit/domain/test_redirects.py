"""After sign-in a user goes to a path on this gateway or to an allowed host; anything else
(other hosts, scheme tricks, protocol-relative URLs, backslashes, header injection) goes home."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twofa.domain.redirects import HOME, safe_redirect

OWN = "login.example.com"
ALLOWED = ("jira.example.com", "Wiki.Example.com")


def redirect(target: str | None) -> str:
    return safe_redirect(target, OWN, ALLOWED)


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/app?x=1",
        "/jira/browse/ABC-1#comment",
        "https://jira.example.com/browse/ABC-1",
        "http://jira.example.com:8080/",
        "https://wiki.example.com/display/X",
        "https://WIKI.example.com/",
        "https://login.example.com/account",
        "HTTPS://login.example.com/",
    ],
)
def test_safe_targets_are_kept(target: str) -> None:
    assert redirect(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.com",
        "//evil.com/path",
        "///evil.com",
        "/\\evil.com",
        "\\\\evil.com",
        "https://evil.com",
        "http://evil.com/login.example.com",
        "https://login.example.com.evil.com/",
        "https://jira.example.com.evil.com/",
        "https://evil.com#@login.example.com",
        "http://user@login.example.com/",
        "http://user:pw@jira.example.com/",
        "https://login.example.com@evil.com/",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "ftp://login.example.com/",
        "/app\r\nSet-Cookie: x=1",
        "/app\nLocation: https://evil.com",
        "/\t/evil.com",
        " //evil.com",
        "\x01//evil.com",
        "app",
        "evil.com",
        "https:evil.com",
        "http:/evil.com",
        "/" + "a" * 2000,
    ],
)
def test_unsafe_targets_go_home(target: str | None) -> None:
    assert redirect(target) == HOME


def test_own_host_is_allowed_without_being_listed() -> None:
    assert safe_redirect("https://gw.local/x", "gw.local", []) == "https://gw.local/x"
    assert safe_redirect("https://other.local/x", "gw.local", []) == HOME


@pytest.mark.parametrize(
    "target", ["http://[evil.com/", "//[evil.com", "https://a\uff03b@login.example.com/"]
)
def test_malformed_netloc_goes_home_instead_of_raising(target: str) -> None:
    assert redirect(target) == HOME


def allowed_result(target: str, result: str) -> bool:
    if result == HOME:
        return True
    if result != target:
        return False
    if target.startswith("/"):
        return not target.startswith("//")
    parsed = urllib.parse.urlsplit(target)
    hosts = {OWN, *(host.lower() for host in ALLOWED)}
    return parsed.scheme in ("http", "https") and (parsed.hostname or "") in hosts


# Printable ASCII without brackets (malformed hosts have their own test above), plus the
# control characters that browsers strip or that split headers.
URL_CHARS = st.sampled_from(
    [chr(c) for c in range(32, 127) if chr(c) not in "[]"] + ["\t", "\r", "\n", "\x00", "\x01"]
)
PIECES = st.sampled_from(
    [
        "/", "//", "\\", "http://", "https://", "javascript:", "@", ":", "#", "?",
        OWN, *ALLOWED, "evil.com", ".evil.com", "user@", "%2f", " ",
    ]
)  # fmt: skip


@given(st.lists(st.one_of(PIECES, st.text(URL_CHARS, max_size=8)), max_size=8).map("".join))
@example("//evil.com")
@example("/\\evil.com")
@example("https://login.example.com.evil.com")
def test_result_is_home_a_local_path_or_an_allowed_url(target: str) -> None:
    result = redirect(target)
    assert allowed_result(target, result), (target, result)

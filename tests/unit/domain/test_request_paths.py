"""The one normal form of request paths, and what is refused: each row is an attack on the
access rules (or a harmless path that must keep working), named after it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twofa.domain.request_paths import (
    NormalPath,
    PathRefusal,
    lenient_reading,
    normal_path,
    normal_pattern,
    path_as_sent,
)

R = PathRefusal

# (attack, raw path, the normal form or the refusal, dot- or empty segments were removed)
TABLE: list[tuple[str, str, str | PathRefusal, bool]] = [
    ("plain", "/public/x", "/public/x", False),
    ("root", "/", "/", False),
    ("trailing-slash-kept", "/admin/", "/admin/", False),
    ("dot-dot-out-of-the-bypass", "/public/../private", "/private", True),
    ("encoded-dot-dot-lower", "/public/%2e%2e/private", "/private", True),
    ("encoded-dot-dot-upper", "/public/%2E%2E/admin/x", "/admin/x", True),
    ("half-encoded-dot-dot", "/public/.%2e/admin", "/admin", True),
    ("other-half-encoded-dot-dot", "/public/%2e./admin", "/admin", True),
    ("dot-segment", "/./admin", "/admin", True),
    ("encoded-dot-segment", "/%2e/admin", "/admin", True),
    ("final-dot-dot-keeps-a-slash", "/admin/x/..", "/admin/", True),
    ("final-dot-keeps-a-slash", "/admin/.", "/admin/", True),
    ("double-slash-in-front", "//admin", "/admin", True),
    ("double-slash-inside", "/public//x", "/public/x", True),
    ("slashes-merged-before-dots-as-tomcat", "/admin//../public/x", "/public/x", True),
    ("dot-dot-above-the-root", "/../admin", R.ABOVE_ROOT, False),
    ("encoded-dot-dot-above-the-root", "/%2e%2e/admin", R.ABOVE_ROOT, False),
    ("encoded-slash-lower", "/public%2f..%2fadmin", R.ENCODED_SEPARATOR, False),
    ("encoded-slash-upper", "/public/..%2Fadmin", R.ENCODED_SEPARATOR, False),
    ("encoded-backslash", "/public/..%5Cadmin", R.ENCODED_SEPARATOR, False),
    ("encoded-backslash-lower", "/public/..%5cadmin", R.ENCODED_SEPARATOR, False),
    ("raw-backslash", "/public/..\\admin", R.BACKSLASH, False),
    ("encoded-nul", "/admin%00.css", R.CONTROL_CHARACTER, False),
    ("raw-nul", "/admin\x00", R.CONTROL_CHARACTER, False),
    ("encoded-line-break", "/a%0d%0aSet-Cookie:x", R.CONTROL_CHARACTER, False),
    ("raw-tab", "/ad\tmin", R.CONTROL_CHARACTER, False),
    ("encoded-delete", "/a%7f", R.CONTROL_CHARACTER, False),
    ("raw-fragment", "/public/x#/../../admin", R.FRAGMENT, False),
    ("jsessionid", "/admin;jsessionid=0123/x", R.PATH_PARAMETERS, False),
    ("tomcat-dot-dot-semicolon", "/public/..;/admin", R.PATH_PARAMETERS, False),
    ("encoded-semicolon", "/public/..%3b/admin", R.ENCODED_SEMICOLON, False),
    ("double-encoded-dots", "/public/%252e%252e/admin", R.DOUBLE_ENCODING, False),
    ("double-encoded-slash", "/public/..%252Fadmin", R.DOUBLE_ENCODING, False),
    ("overlong-utf8-dot", "/public/%c0%ae%c0%ae/admin", R.NOT_UTF8, False),
    ("overlong-utf8-slash", "/public/..%c0%afadmin", R.NOT_UTF8, False),
    ("three-byte-overlong-dot", "/%e0%80%ae%e0%80%ae/admin", R.NOT_UTF8, False),
    ("latin1-byte", "/caf%E9", R.NOT_UTF8, False),
    ("raw-latin1-byte", "/caf\xe9", R.NOT_UTF8, False),
    ("encoded-surrogate", "/%ed%a0%80", R.NOT_UTF8, False),
    ("fullwidth-solidus", "/public/..%EF%BC%8Fadmin", R.LOOKALIKE, False),
    ("fullwidth-dots", "/public/%ef%bc%8e%ef%bc%8e/admin", R.LOOKALIKE, False),
    ("two-dot-leader", "/public/%E2%80%A5/admin", R.LOOKALIKE, False),
    ("iis-unicode-escape", "/public/%u002e%u002e/admin", R.MALFORMED_ESCAPE, False),
    ("truncated-escape", "/admin%2", R.MALFORMED_ESCAPE, False),
    ("no-leading-slash", "admin/x", R.NOT_ABSOLUTE, False),
    ("asterisk-form", "*", R.NOT_ABSOLUTE, False),
    ("empty", "", R.NOT_ABSOLUTE, False),
    ("three-dots-are-a-name", "/a/.../b", "/a/.../b", False),
    ("dot-files-are-names", "/.well-known/x/.git", "/.well-known/x/.git", False),
    ("upper-case-is-kept-for-the-rules", "/ADMIN/x", "/ADMIN/x", False),
    ("trailing-dot-is-kept-for-the-rules", "/admin./x", "/admin./x", False),
    ("encoded-letters", "/%61dmin/%41", "/admin/A", False),
    ("encoded-unreserved-marks", "/%7euser/%2D%5F", "/~user/-_", False),
    ("hex-digits-upper-cased", "/caf%c3%a9", "/caf%C3%A9", False),
    ("encoded-sub-delimiter-stays-encoded", "/a%21b!c", "/a%21b!c", False),
    ("raw-characters-a-path-may-not-hold", '/a b"c|d', "/a%20b%22c%7Cd", False),
    ("raw-utf8-bytes", "/caf\xc3\xa9", "/caf%C3%A9", False),
    ("text-above-latin1", "/日本", "/%E6%97%A5%E6%9C%AC", False),
    ("ellipsis-is-only-text", "/Wait%E2%80%A6", "/Wait%E2%80%A6", False),
    ("percent-sign-alone", "/100%25", "/100%25", False),
    ("encoded-question-mark-stays", "/a%3Fb", "/a%3Fb", False),
]


@pytest.mark.parametrize(
    ("raw", "wanted", "restructured"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_path_tricks_are_normalised_or_refused(
    raw: str, wanted: str | PathRefusal, restructured: bool
) -> None:
    normal = normal_path(raw)
    if isinstance(wanted, PathRefusal):
        assert normal is wanted
        return
    assert normal == NormalPath(wanted, wanted, restructured)


def test_the_table_holds_at_least_thirty_tricks() -> None:
    assert len({row[0] for row in TABLE}) == len(TABLE) >= 30


@pytest.mark.parametrize("raw", ["/public/../private", "//admin", "/a/./b", "/a/b/.."])
def test_a_path_passed_on_as_sent_must_already_be_normal(raw: str) -> None:
    assert path_as_sent(raw) is PathRefusal.NOT_NORMAL


def test_a_normal_path_is_checked_as_sent() -> None:
    assert path_as_sent("/%61dmin/x") == NormalPath("/admin/x", "/admin/x", False)


def test_jsessionid_when_allowed_is_dropped_for_the_rules_and_kept_for_the_app() -> None:
    normal = normal_path("/admin;jsessionid=AB%2d/x;v=1;w=2", allow_parameters=True)
    assert normal == NormalPath("/admin;jsessionid=AB-/x;v=1;w=2", "/admin/x", False)


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        ("/public/..;/admin", PathRefusal.DOT_SEGMENT_PARAMETERS),
        ("/public/.;x/admin", PathRefusal.DOT_SEGMENT_PARAMETERS),
        ("/;x/admin", PathRefusal.PATH_PARAMETERS),
        ("/a;x=%2f", PathRefusal.ENCODED_SEPARATOR),
        ("/a;x=%00", PathRefusal.CONTROL_CHARACTER),
        ("/a;x=%3b", PathRefusal.ENCODED_SEMICOLON),
    ],
)
def test_allowed_parameters_still_refuse_tricks(raw: str, refusal: PathRefusal) -> None:
    assert normal_path(raw, allow_parameters=True) is refusal


@pytest.mark.parametrize(
    ("rule_path", "reading"),
    [
        ("/admin./x", "/admin/x"),
        ("/admin%20/x", "/admin/x"),
        ("/admin.%20./x", "/admin/x"),
        ("/public/x.", "/public/x"),
        ("/a/.../b", "/a/b"),
        ("/ADMIN/x", "/ADMIN/x"),  # case is the rules' business
        ("/", "/"),
        ("/a/", "/a/"),
    ],
)
def test_the_lenient_reading_drops_trailing_dots_and_spaces(rule_path: str, reading: str) -> None:
    assert lenient_reading(rule_path) == reading


@pytest.mark.parametrize(
    ("pattern", "normal"),
    [
        ("/admin/*", "/admin/*"),
        ("/wiki/Straße/*", "/wiki/Stra%C3%9Fe/*"),
        ("/my files/*", "/my%20files/*"),
        ("/%7euser/[ab]?", "/~user/[ab]?"),
        ("/caf%c3%a9", "/caf%C3%A9"),
    ],
)
def test_rule_patterns_are_written_in_the_paths_normal_form(pattern: str, normal: str) -> None:
    assert normal_pattern(pattern) == normal


_PATH_CHARACTERS = st.sampled_from(
    ["/", ".", "..", "a", "A", "~", "%2e", "%2E", "%41", "%7e", "%20", "%C3%A9", "é", "!", "|", ";"]
)


@given(st.lists(_PATH_CHARACTERS, max_size=12), st.booleans())
def test_the_normal_form_is_its_own_normal_form(parts: list[str], parameters: bool) -> None:
    """What the built-in proxy forwards is checked again as sent: it must pass unchanged."""
    normal = normal_path("/" + "".join(parts), allow_parameters=parameters)
    if isinstance(normal, NormalPath):
        again = path_as_sent(normal.path, allow_parameters=parameters)
        assert again == NormalPath(normal.path, normal.rule_path, False)

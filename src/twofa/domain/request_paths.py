"""The one normal form of a request path that access rules are matched against, and the paths
twofa refuses (400) because no normal form is safe: the application behind the proxy may read
them in a way the rules did not see (Tomcat, and so Jira, resolves `..;/`; IIS takes `\\` for
`/`; a double decoder turns `%252e` into `.`).

Normalising: escapes of unreserved characters are decoded (`%61` is `a`, `%2e` is `.`), every
other escape keeps upper-case hex digits, characters a path may not hold raw (space, `"`, `|`,
bytes above 127) are escaped, then empty segments (`//`) are merged and dot-segments (`.`,
`..`, `%2e%2e`) resolved, in that order, as Tomcat does.

Refused: a malformed escape; an encoded `/` or `\\`, and a raw `\\`; NUL and other control
characters; a raw `#`; an encoded `;`; a double encoding (`%25` before two hex digits); bytes
that are not UTF-8 (the overlong `%c0%ae` is a `.` to some decoders); a character whose
compatibility form is a separator or a dot-segment (the fullwidth solidus `%EF%BC%8F`); a `..`
above the root; `;` path parameters (`;jsessionid=`) unless the settings allow them, and even
then on a dot-segment (`..;x`). Where the proxy passes the path on as sent (forward-auth), a
path that needed merging or resolving is refused too (`path_as_sent`); the built-in proxy
forwards the normal form instead.

Case is not folded here: the rules decide on both readings (domain.access.decide).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Final

UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")
# Kept raw in a segment: unreserved, sub-delimiters (but `;`, the parameter delimiter), `:`, `@`.
_RAW_ALLOWED: Final = UNRESERVED | frozenset("!$&'()*+,=:@")
_DOT_SEGMENTS: Final = frozenset({".", ".."})
_DOUBLE_ENCODED: Final = re.compile(rb"%[0-9A-Fa-f]{2}")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_HEX: Final = frozenset(string.hexdigits.encode())
# Already in normal form: no escape, nothing to refuse, no empty or dot-segment. Nearly every
# path a browser sends; this is on the path of every request, so it skips the byte loop.
_PLAIN: Final = re.compile(r"(?=/)(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9._~!$&'()*+,=:@-]+)*/?")


class PathRefusal(Enum):
    """Why a path cannot be checked safely; the value is the reason the 400 gives."""

    NOT_ABSOLUTE = "the path does not start with /"
    MALFORMED_ESCAPE = "a % is not followed by two hex digits"
    ENCODED_SEPARATOR = "an encoded / or \\ (%2F, %5C)"
    BACKSLASH = "a backslash, which some servers take for /"
    CONTROL_CHARACTER = "NUL or another control character"
    FRAGMENT = "a raw # (browsers never send one; servers differ on where the path ends)"
    ENCODED_SEMICOLON = "an encoded ; (%3B)"
    DOUBLE_ENCODING = "a double percent-encoding (%25 before two hex digits)"
    NOT_UTF8 = "percent-encoded bytes that are not UTF-8 (overlong forms included)"
    LOOKALIKE = "a character some servers read as /, \\, ; or a dot-segment"
    ABOVE_ROOT = "a .. above the root"
    PATH_PARAMETERS = "; path parameters (access.allow_path_parameters is off)"
    DOT_SEGMENT_PARAMETERS = "a dot-segment with ; parameters (..;)"
    NOT_NORMAL = "empty or dot-segments, which the application may resolve otherwise"


@dataclass(frozen=True)
class NormalPath:
    path: str  # the normal form, parameters kept: what the built-in proxy forwards
    rule_path: str  # the same without `;` parameters: what the rules match (Tomcat's reading)
    restructured: bool  # empty or dot-segments were removed: the raw form reads differently


def normal_path(raw: str, *, allow_parameters: bool = False) -> NormalPath | PathRefusal:
    """`raw` is the path as sent, one character per byte (as ASGI servers and header values
    give it); a character above U+00FF (text from Python, not from the wire) counts as UTF-8."""
    if _PLAIN.fullmatch(raw):
        return NormalPath(raw, raw, restructured=False)
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8")
    if not data.startswith(b"/"):
        return PathRefusal.NOT_ABSOLUTE
    if b";" in data and not allow_parameters:
        return PathRefusal.PATH_PARAMETERS
    raw_segments = data[1:].split(b"/")
    segments: list[tuple[str, str]] = []  # (name, ";parameters" or "")
    restructured = False
    for index, raw_segment in enumerate(raw_segments):
        segment = _segment(raw_segment)
        if isinstance(segment, PathRefusal):
            return segment
        name, parameters = segment
        if name in _DOT_SEGMENTS and parameters:
            return PathRefusal.DOT_SEGMENT_PARAMETERS
        if not name and index < len(raw_segments) - 1:
            if parameters:  # `/;x/`: a segment of parameters only means nothing
                return PathRefusal.PATH_PARAMETERS
            restructured = True  # `//` merged, before dot-segments are resolved (as Tomcat)
            continue
        segments.append((name, parameters))
    resolved = _resolve_dot_segments(segments)
    if resolved is None:
        return PathRefusal.ABOVE_ROOT
    restructured = restructured or any(name in _DOT_SEGMENTS for name, _ in segments)
    return NormalPath(
        "/" + "/".join(name + parameters for name, parameters in resolved),
        "/" + "/".join(name for name, _ in resolved),
        restructured,
    )


def path_as_sent(raw: str, *, allow_parameters: bool = False) -> NormalPath | PathRefusal:
    """For a path the proxy passes on as it came (forward-auth): one the application could
    resolve otherwise than twofa (`/admin/../public/x` is under /admin to an application that
    does not resolve dot-segments, `//public/x` names a host to some URL parsers) is refused.
    Browsers resolve dot-segments themselves, `%2e` ones included, before they send a URL."""
    normal = normal_path(raw, allow_parameters=allow_parameters)
    if isinstance(normal, NormalPath) and normal.restructured:
        return PathRefusal.NOT_NORMAL
    return normal


def lenient_reading(rule_path: str) -> str:
    """How a lenient server (IIS, or a Windows file system under Tomcat) reads the path: with
    trailing dots and spaces dropped from each segment (`/admin./` is `/admin/`). Such servers
    ignore case too, which the rules' case-insensitive matching of this reading covers."""
    if not (rule_path.endswith((".", "%20")) or "./" in rule_path or "%20/" in rule_path):
        return rule_path
    segments = rule_path.split("/")
    kept = [_without_trailing_dots(segment) for segment in segments]
    return "/".join(
        segment for index, segment in enumerate(kept) if segment or index in (0, len(kept) - 1)
    )


def normal_pattern(pattern: str) -> str:
    """A rule's path glob in the paths' normal form, so a rule written with `é`, a space or
    `%7e` matches the paths it names instead of none (a deny rule that never matches fails
    open); the glob characters `*`, `?`, `[`, `]` stay as they are."""
    decoded = _ESCAPE.sub(_normal_escape, pattern)
    return "".join(
        char if char in _RAW_ALLOWED or char in "/;%*?[]" else _escaped(char.encode())
        for char in decoded
    )


def _segment(raw: bytes) -> tuple[str, str] | PathRefusal:
    name, delimiter, parameters = raw.partition(b";")
    normal_name = _normal_text(name)
    if isinstance(normal_name, PathRefusal):
        return normal_name
    if not delimiter:
        return normal_name, ""
    normal_parameters: list[str] = []
    for raw_part in parameters.split(b";"):
        part = _normal_text(raw_part)
        if isinstance(part, PathRefusal):
            return part
        normal_parameters.append(part)
    return normal_name, ";" + ";".join(normal_parameters)


def _normal_text(raw: bytes) -> str | PathRefusal:
    """One segment's name (or one parameter) in normal form; `decoded` collects the bytes the
    application gets, to check them as a whole (UTF-8, double encoding, lookalikes)."""
    out: list[str] = []
    decoded = bytearray()
    index = 0
    while index < len(raw):
        byte = raw[index]
        escaped = byte == 0x25
        if escaped:
            digits = raw[index + 1 : index + 3]
            if len(digits) < 2 or not all(d in _HEX for d in digits):
                return PathRefusal.MALFORMED_ESCAPE
            byte = int(digits, 16)
            index += 3
        else:
            index += 1
        if byte < 0x20 or byte == 0x7F:
            return PathRefusal.CONTROL_CHARACTER
        if byte == 0x23 and not escaped:
            return PathRefusal.FRAGMENT
        if byte == 0x2F or (byte == 0x5C and escaped):
            return PathRefusal.ENCODED_SEPARATOR
        if byte == 0x5C:
            return PathRefusal.BACKSLASH
        if byte == 0x3B:  # only an escaped one reaches here: a raw `;` delimits parameters
            return PathRefusal.ENCODED_SEMICOLON
        char = chr(byte)
        keep_raw = char in UNRESERVED or (char in _RAW_ALLOWED and not escaped)
        out.append(char if keep_raw else f"%{byte:02X}")
        decoded.append(byte)
    return _decoded_problem(bytes(decoded)) or "".join(out)


def _decoded_problem(decoded: bytes) -> PathRefusal | None:
    if b"%" in decoded and _DOUBLE_ENCODED.search(decoded):
        return PathRefusal.DOUBLE_ENCODING
    if decoded.isascii():
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return PathRefusal.NOT_UTF8
    compatible = unicodedata.normalize("NFKC", text)
    if compatible in _DOT_SEGMENTS or any(char in compatible for char in "/\\;"):
        return PathRefusal.LOOKALIKE
    return None


def _resolve_dot_segments(segments: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """RFC 3986's remove_dot_segments on whole segments; None when a `..` leaves the root
    (Tomcat answers 400 too). A final `.` or `..` leaves a trailing slash."""
    resolved: list[tuple[str, str]] = []
    for index, (name, parameters) in enumerate(segments):
        last = index == len(segments) - 1
        if name == "..":
            if not resolved:
                return None
            resolved.pop()
        if name in _DOT_SEGMENTS:
            if last:
                resolved.append(("", ""))
            continue
        resolved.append((name, parameters))
    return resolved


def _without_trailing_dots(segment: str) -> str:
    while True:
        if segment.endswith("."):
            segment = segment[:-1]
        elif segment.endswith("%20"):
            segment = segment[:-3]
        else:
            return segment


def _normal_escape(match: re.Match[str]) -> str:
    char = chr(int(match[1], 16))
    return char if char in UNRESERVED else f"%{ord(char):02X}"


def _escaped(data: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in data)

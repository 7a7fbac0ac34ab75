"""The pure side of the LDAP directory, testable without a server: checking the search filters
an admin writes, filling them with escaped values (a typed username must never become filter
syntax), reading a group's name out of its DN, and reading entries out of ldap3's answers."""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

from twofa.config.directories import (
    DN_PLACEHOLDER,
    USERNAME_PLACEHOLDER,
    FilterTemplateError,
    check_filter_template,
    is_loopback,
)

__all__ = [
    "DN_PLACEHOLDER",
    "USERNAME_PLACEHOLDER",
    "FilterTemplateError",
    "check_filter_template",
    "is_loopback",
]

# Characters that mean nothing in a filter, to ldap3's parser or to a server. Everything else
# is sent as \XX escapes of its UTF-8 bytes: RFC 4515 allows escaping any octet, and escaping
# more than `( ) * \ NUL` also keeps characters that ldap3's parser looks at (`=`, `~`, `:`,
# `<`, `>`, surrounding spaces, which it would strip) out of the filter text.
_SAFE_IN_FILTER: Final = frozenset(string.ascii_letters + string.digits + "_.-@")
_HEX_DIGITS: Final = frozenset(string.hexdigits)


def escape_filter_value(value: str) -> str:
    """`value` as an LDAP filter assertion value that matches exactly that text."""
    return "".join(
        char if char in _SAFE_IN_FILTER else "".join(f"\\{byte:02x}" for byte in char.encode())
        for char in value
    )


def fill_filter(template: str, placeholder: str, value: str) -> str:
    """The filter with every `placeholder` replaced by `value`, escaped. `str.replace`, not
    `str.format`: the template is text, and format would read `{username.attr}`."""
    return template.replace(placeholder, escape_filter_value(value))


def group_name_from_dn(dn: str, name_attribute: str = "cn") -> str | None:
    """The readable name of a group from its DN: the value of the first RDN (the one of type
    `name_attribute` when the RDN has several), unescaped; None for a DN that cannot be
    parsed."""
    try:
        components = parse_dn(dn)
    except LDAPInvalidDnError:
        return None
    first_rdn: list[tuple[str, str]] = []
    for attribute, value, separator in components:
        first_rdn.append((attribute, value))
        if separator != "+":
            break
    if not first_rdn:
        return None
    wanted = name_attribute.casefold()
    chosen = next((value for attribute, value in first_rdn if attribute.casefold() == wanted), None)
    name = unescape_dn_value(chosen if chosen is not None else first_rdn[0][1])
    return name or None


def unescape_dn_value(value: str) -> str:
    """An RDN value with RFC 4514 escapes (`\\,` and `\\2C` alike, UTF-8 bytes as `\\C3\\A9`)
    turned back into text. A BER value (`#04...`) is left as it is."""
    raw = bytearray()
    position = 0
    while position < len(value):
        char = value[position]
        if char != "\\" or position + 1 == len(value):
            raw.extend(char.encode())
            position += 1
            continue
        pair = value[position + 1 : position + 3]
        if len(pair) == 2 and set(pair) <= _HEX_DIGITS:
            raw.append(int(pair, 16))
            position += 3
        else:
            raw.extend(value[position + 1].encode())
            position += 2
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class LdapEntry:
    """One entry of a search answer; attribute names are case-folded, as LDAP compares them."""

    dn: str
    attributes: dict[str, list[str]]

    def values(self, attribute: str) -> list[str]:
        return self.attributes.get(attribute.casefold(), [])

    def first(self, attribute: str) -> str:
        values = self.values(attribute)
        return values[0] if values else ""


def entries_in(response: Sequence[dict[str, Any]] | None) -> list[LdapEntry]:
    """The entries of a search answer, without continuation references (AD sends them for
    other naming contexts); values decoded as UTF-8, attribute names case-folded."""
    entries = []
    for item in response or []:
        if item.get("type") != "searchResEntry":
            continue
        raw: dict[str, list[bytes]] = item.get("raw_attributes") or {}
        # ldap3 (auto_range) gathers AD's ranged answers ("member;range=0-1499") under the
        # plain name, which is the one read here.
        attributes = {
            name.casefold(): [value.decode("utf-8", errors="replace") for value in values]
            for name, values in raw.items()
        }
        entries.append(LdapEntry(str(item["dn"]), attributes))
    return entries


def canonical_username(values: list[str], typed: str) -> str | None:
    """The directory's spelling of the username: the value matching what was typed (the
    attribute may hold several), else the first."""
    for value in values:
        if value.casefold() == typed.strip().casefold():
            return value
    return values[0] if values else None


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

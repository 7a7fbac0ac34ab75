"""The pure parts of the LDAP directory: escaping and filling filters (checked against how
ldap3 parses and sends them), checking admin-written filters, DN → group name, and reading
search answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ldap3.operation.search import AND, MATCH_EQUAL, parse_filter
from ldap3.protocol.convert import prepare_filter_for_sending

from twofa.directories.ldap_filter import (
    DN_PLACEHOLDER,
    USERNAME_PLACEHOLDER,
    FilterTemplateError,
    LdapEntry,
    canonical_username,
    check_filter_template,
    entries_in,
    escape_filter_value,
    fill_filter,
    group_name_from_dn,
    is_loopback,
    unescape_dn_value,
)

DEFAULT_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid={username}))"


def parsed_by_ldap3(search_filter: str) -> object:
    """The filter tree ldap3 builds before it encodes a search request."""
    return parse_filter(search_filter, None, True, False, None, False).elements[0]


def test_plain_usernames_are_left_readable() -> None:
    assert escape_filter_value("alice.smith_2-x@example.org") == "alice.smith_2-x@example.org"


def test_filter_syntax_characters_are_hex_escaped() -> None:
    assert escape_filter_value("*()\\\x00") == "\\2a\\28\\29\\5c\\00"


def test_characters_ldap3_would_read_or_strip_are_escaped_too() -> None:
    assert escape_filter_value(" a=b~:<> ") == "\\20a\\3db\\7e\\3a\\3c\\3e\\20"


def test_non_ascii_text_is_escaped_as_its_utf8_bytes() -> None:
    assert escape_filter_value("é") == "\\c3\\a9"


@given(st.text())
def test_any_username_stays_one_equality_match_on_the_exact_text(username: str) -> None:
    tree = parsed_by_ldap3(fill_filter(DEFAULT_USER_FILTER, USERNAME_PLACEHOLDER, username))

    assert tree.tag == AND
    object_class, uid = tree.elements
    assert (object_class.tag, object_class.assertion) == (
        MATCH_EQUAL,
        {"attr": "objectClass", "value": b"inetOrgPerson"},
    )
    assert uid.tag == MATCH_EQUAL
    assert uid.assertion["attr"] == "uid"
    assert prepare_filter_for_sending(uid.assertion["value"]) == username.encode()


@pytest.mark.parametrize("username", ["*", "alice)(uid=*", "*)(|(uid=*", "a\x00", "x)(!(uid=x"])
def test_injection_attempts_become_literal_text(username: str) -> None:
    filled = fill_filter("(uid={username})", USERNAME_PLACEHOLDER, username)

    assert filled.count("(") == filled.count(")") == 1
    assert "*" not in filled
    assert "\x00" not in filled


def test_every_placeholder_is_filled() -> None:
    filled = fill_filter("(|(uid={username})(mail={username}))", USERNAME_PLACEHOLDER, "a*")

    assert filled == "(|(uid=a\\2a)(mail=a\\2a))"


def test_a_dn_in_a_group_filter_is_escaped() -> None:
    dn = "uid=dana\\2C o'neil*,ou=people,dc=example,dc=org"

    filled = fill_filter("(member={dn})", DN_PLACEHOLDER, dn)

    tree = parsed_by_ldap3(filled)
    assert prepare_filter_for_sending(tree.assertion["value"]) == dn.encode()


@pytest.mark.parametrize(
    ("template", "placeholder"),
    [
        (DEFAULT_USER_FILTER, USERNAME_PLACEHOLDER),
        ("(sAMAccountName={username})", USERNAME_PLACEHOLDER),
        ("  (|(uid={username})(mail={username}))  ", USERNAME_PLACEHOLDER),
        ("(&(objectClass=groupOfNames)(member={dn}))", DN_PLACEHOLDER),
        ("(member:1.2.840.113556.1.4.1941:={dn})", DN_PLACEHOLDER),
    ],
)
def test_usable_filters_are_accepted(template: str, placeholder: str) -> None:
    assert check_filter_template(template, placeholder) == template.strip()


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("(uid=alice)", "must contain"),
        ("(uid={user})", "must contain"),
        ("(uid={username})(cn={username2})", "only the placeholder"),
        ("uid={username}", "parentheses"),
        ("(uid={username}))(", "parentheses"),
        ("(uid={username})(objectClass=*)", "parentheses"),
        ("(&(uid={username})", "parentheses"),
    ],
)
def test_unusable_filters_are_refused_with_the_reason(template: str, problem: str) -> None:
    with pytest.raises(FilterTemplateError, match=problem):
        check_filter_template(template, USERNAME_PLACEHOLDER)


@pytest.mark.parametrize(
    ("dn", "name"),
    [
        ("cn=engineering,ou=groups,dc=example,dc=org", "engineering"),
        ("CN=Domain Admins,CN=Users,DC=corp,DC=example,DC=com", "Domain Admins"),
        ("cn=Smith\\, John,ou=groups,dc=x", "Smith, John"),
        ("cn=R\\2BD\\2C Paris,ou=groups,dc=x", "R+D, Paris"),
        ("cn=caf\\C3\\A9,dc=x", "café"),
        ("ou=x+cn=ops,dc=x", "ops"),
        ("ou=platform,ou=groups,dc=x", "platform"),
    ],
)
def test_group_name_is_the_first_rdn_value_unescaped(dn: str, name: str) -> None:
    assert group_name_from_dn(dn) == name


def test_group_name_attribute_picks_within_a_multi_valued_rdn() -> None:
    assert group_name_from_dn("cn=ops+gidNumber=42,dc=x", "gidNumber") == "42"


@pytest.mark.parametrize("dn", ["not a dn", "", "=x,dc=y"])
def test_unreadable_dn_has_no_group_name(dn: str) -> None:
    assert group_name_from_dn(dn) is None


def test_dn_unescaping_keeps_unescaped_text_and_a_lone_trailing_backslash() -> None:
    assert unescape_dn_value("plain") == "plain"
    assert unescape_dn_value("a\\\\b\\") == "a\\b\\"


def test_canonical_username_is_the_value_that_was_typed_in_the_directorys_case() -> None:
    assert canonical_username(["Alice", "asmith"], "ASMITH") == "asmith"
    assert canonical_username(["Alice"], " alice ") == "Alice"


def test_canonical_username_falls_back_to_the_first_value() -> None:
    assert canonical_username(["alice", "asmith"], "alice@example.org") == "alice"
    assert canonical_username([], "alice") is None


def test_entries_skip_references_and_decode_values() -> None:
    response = [
        {"type": "searchResRef", "uri": ["ldap://other.example/dc=other"]},
        {
            "type": "searchResEntry",
            "dn": "uid=alice,dc=x",
            "raw_attributes": {"UID": [b"alice"], "cn": ["Zoë".encode()], "mail": []},
        },
    ]

    (entry,) = entries_in(response)

    assert entry == LdapEntry("uid=alice,dc=x", {"uid": ["alice"], "cn": ["Zoë"], "mail": []})
    assert entry.first("Uid") == "alice"
    assert entry.first("mail") == ""
    assert entry.values("memberOf") == []


def test_entries_of_an_empty_answer() -> None:
    assert entries_in(None) == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("10.0.0.1", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback

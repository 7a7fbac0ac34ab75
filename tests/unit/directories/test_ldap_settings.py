"""LdapSettings: what an admin may write, what is refused with a reason, and the refusals the
directory makes before it talks to any server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from twofa.directories.ldap import LdapDirectory, LdapSettings
from twofa.errors import ConfigurationError


def settings(**overrides: Any) -> LdapSettings:
    fields: dict[str, Any] = {
        "url": "ldaps://ldap.example.com",
        "bind_dn": "cn=twofa,ou=services,dc=example,dc=com",
        "bind_password": "service-secret",
        "base_dn": "dc=example,dc=com",
        **overrides,
    }
    return LdapSettings(**fields)


def test_defaults_suit_openldap_with_member_of() -> None:
    ldap = settings()

    assert ldap.user_filter == "(&(objectClass=inetOrgPerson)(uid={username}))"
    assert (ldap.username_attribute, ldap.display_name_attribute) == ("uid", "cn")
    assert (ldap.group_source, ldap.group_attribute) == ("member_of", "memberOf")
    assert ldap.nested_groups is True


@pytest.mark.parametrize(
    ("url", "normalised", "port"),
    [
        ("ldaps://ldap.example.com", "ldaps://ldap.example.com", 636),
        ("ldaps://ldap.example.com:3269/", "ldaps://ldap.example.com:3269", 3269),
        (" ldap://127.0.0.1 ", "ldap://127.0.0.1", 389),
    ],
)
def test_url_is_normalised_and_gives_the_port(url: str, normalised: str, port: int) -> None:
    ldap = settings(url=url)

    assert (ldap.url, ldap.port) == (normalised, port)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://ldap.example.com", "must start with ldaps:// or ldap://"),
        ("ldaps://", "no host"),
        ("ldaps://ldap.example.com/dc=example,dc=com", "names only the server"),
        ("ldaps://ldap.example.com:99999", "not a valid URL"),
    ],
)
def test_unusable_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(url=url)


def test_clear_text_ldap_to_another_machine_is_refused() -> None:
    with pytest.raises(ValidationError, match="clear text"):
        settings(url="ldap://ldap.example.com")


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "ldap://ldap.example.com", "start_tls": True},
        {"url": "ldap://ldap.example.com", "allow_insecure_ldap": True},
        {"url": "ldap://localhost:3389"},
        {"url": "ldap://[::1]:3389"},
    ],
)
def test_clear_text_is_accepted_when_encrypted_local_or_allowed(overrides: dict[str, Any]) -> None:
    settings(**overrides)


def test_start_tls_over_ldaps_is_refused() -> None:
    with pytest.raises(ValidationError, match="TLS already"):
        settings(start_tls=True)


def test_group_search_needs_its_base_dn() -> None:
    with pytest.raises(ValidationError, match="group_base_dn"):
        settings(group_source="group_search")
    settings(group_source="group_search", group_base_dn="ou=groups,dc=example,dc=com")


def test_empty_service_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="password is empty"):
        settings(bind_password="")


def test_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        settings(ca_file=str(tmp_path / "missing.pem"))
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings(ca_file=str(tmp_path / "ca.pem")).ca_file == str(tmp_path / "ca.pem")


def test_ca_file_that_is_not_a_certificate_stops_the_directory_at_start(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")

    with pytest.raises(ConfigurationError, match="CA file"):
        LdapDirectory(settings(ca_file=str(tmp_path / "ca.pem")))


def test_filters_without_their_placeholder_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"\{username\}"):
        settings(user_filter="(uid=alice)")
    with pytest.raises(ValidationError, match=r"\{dn\}"):
        settings(group_filter="(member={username})")


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="verify_tls"):
        settings(verify_tls=False)


def test_the_service_password_is_not_shown() -> None:
    assert "service-secret" not in repr(settings())


@pytest.mark.parametrize(("username", "password"), [("alice", ""), ("", "alice-pass")])
async def test_empty_username_or_password_is_refused_before_any_connection(
    username: str, password: str
) -> None:
    # 192.0.2.0/24 is reserved for documentation: nothing answers there.
    directory = LdapDirectory(settings(url="ldaps://192.0.2.1", timeout_s=0.1))

    assert await directory.authenticate(username, password) is None


async def test_groups_of_an_empty_username_is_none_without_a_connection() -> None:
    directory = LdapDirectory(settings(url="ldaps://192.0.2.1", timeout_s=0.1))

    assert await directory.groups_of("") is None

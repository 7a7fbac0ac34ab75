"""Settings of the external directories (LDAP / Active Directory, Atlassian Crowd REST), as
written in the settings file. A leaf below `config`, so the validated settings object can
hold them and the directories can read them."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from twofa.errors import Invalid

_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine, where clear text cannot be overheard."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_url(
    value: str, what: str, schemes: tuple[str, ...], expected: str
) -> urllib.parse.SplitResult:
    """The URL split, if it names a host with one of `schemes` and a usable port."""
    text = value.strip()
    try:
        parsed = urllib.parse.urlsplit(text)
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in schemes:
        raise ValueError(f"the {what} URL must start with {expected}")
    if not parsed.hostname:
        raise ValueError(f"the {what} URL has no host name")
    if port == 0:
        raise ValueError("the port is not a number between 1 and 65535")
    return parsed


class CrowdSettings(BaseModel):
    """How to reach Crowd as an application. `url` is the base URL of Crowd, Jira or
    Confluence, with its context path if any (https://crowd.example.com/crowd)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    application_name: str = Field(min_length=1)
    application_password: SecretStr
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    verify_tls: bool = True
    # Plain http carries the application password and every user's password in clear text;
    # it is only accepted to this machine unless the admin says the network is trusted.
    allow_insecure_http: bool = False

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        parsed = server_url(
            value, "Crowd", ("http", "https"), "https:// (or http:// on this machine)"
        )
        if parsed.query or parsed.fragment or parsed.username or parsed.password:
            raise ValueError(
                "the Crowd URL must be a base URL without query, fragment or credentials, "
                "e.g. https://crowd.example.com/crowd"
            )
        return urllib.parse.urlunsplit(
            (parsed.scheme, parsed.netloc, parsed.path.rstrip("/"), "", "")
        )

    @field_validator("application_password")
    @classmethod
    def _password_is_set(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the application password is empty")
        return value

    @model_validator(mode="after")
    def _no_clear_text_off_this_machine(self) -> CrowdSettings:
        parsed = urllib.parse.urlsplit(self.url)
        if (
            parsed.scheme == "http"
            and not self.allow_insecure_http
            and not is_loopback(parsed.hostname or "")
        ):
            raise ValueError(
                "plain http would send passwords in clear text: use https, or set "
                "allow_insecure_http for a network you trust"
            )
        return self


USERNAME_PLACEHOLDER: Final = "{username}"
DN_PLACEHOLDER: Final = "{dn}"


class FilterTemplateError(Invalid, ValueError):
    """An admin-written search filter that cannot be used. A ValueError too, so the settings'
    validators report it as a problem with the field."""


def check_filter_template(template: str, placeholder: str) -> str:
    """The template, stripped, if it is one parenthesised filter that uses `placeholder`;
    otherwise a `FilterTemplateError` saying what is wrong."""
    text = template.strip()
    if placeholder not in text:
        raise FilterTemplateError(
            f"the filter must contain {placeholder}, e.g. (uid={placeholder})"
        )
    without_placeholder = text.replace(placeholder, "x")
    if "{" in without_placeholder or "}" in without_placeholder:
        raise FilterTemplateError(
            f"the filter may use only the placeholder {placeholder}; other braces are a typo"
        )
    if not (text.startswith("(") and text.endswith(")")):
        raise FilterTemplateError("the filter must be enclosed in parentheses")
    depth = 0
    for position, char in enumerate(without_placeholder):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or (depth == 0 and position < len(without_placeholder) - 1):
            raise FilterTemplateError(
                "the filter's parentheses do not match (it must be one filter, e.g. "
                "(&(objectClass=person)(uid={username})))"
            )
    if depth != 0:
        raise FilterTemplateError("the filter's parentheses do not match")
    return text


class LdapSettings(BaseModel):
    """How to reach an LDAP server or an Active Directory domain controller. For AD use
    `user_filter="(&(objectClass=user)(sAMAccountName={username}))"`,
    `username_attribute="sAMAccountName"` and `display_name_attribute="displayName"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    start_tls: bool = False
    # PEM file of the CA(s) to trust; None trusts the system's CAs.
    ca_file: str | None = None
    bind_dn: str = Field(min_length=1)
    bind_password: SecretStr
    base_dn: str = Field(min_length=1)
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    username_attribute: str = Field(default="uid", min_length=1)
    display_name_attribute: str = Field(default="cn", min_length=1)
    email_attribute: str = Field(default="mail", min_length=1)
    # "member_of": the user entry's `group_attribute` lists group DNs (OpenLDAP's memberof
    # overlay, AD). "group_search": groups under `group_base_dn` matching `group_filter`.
    group_source: Literal["member_of", "group_search"] = "member_of"
    group_attribute: str = Field(default="memberOf", min_length=1)
    group_base_dn: str | None = None
    # On AD, "(member:1.2.840.113556.1.4.1941:={dn})" finds nested groups in one search.
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    group_name_attribute: str = Field(default="cn", min_length=1)
    # Follow groups that are members of groups, so a user in a nested group is in its parent.
    nested_groups: bool = True
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Plain ldap:// without StartTLS carries every password in clear text; it is only
    # accepted to this machine unless the admin says the network is trusted.
    allow_insecure_ldap: bool = False

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        parsed = server_url(value, "LDAP", ("ldap", "ldaps"), "ldaps:// or ldap://")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
            raise ValueError(
                "the LDAP URL names only the server, e.g. ldaps://dc1.example.com:636; "
                "the base DN and filters are settings of their own"
            )
        return f"{parsed.scheme}://{parsed.netloc}"

    @field_validator("bind_password")
    @classmethod
    def _password_is_set(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the service account's password is empty")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"the CA file {value!r} does not exist")
        return value

    @field_validator("user_filter")
    @classmethod
    def _user_filter_is_usable(cls, value: str) -> str:
        return check_filter_template(value, USERNAME_PLACEHOLDER)

    @field_validator("group_filter")
    @classmethod
    def _group_filter_is_usable(cls, value: str) -> str:
        return check_filter_template(value, DN_PLACEHOLDER)

    @model_validator(mode="after")
    def _consistent(self) -> LdapSettings:
        if self.scheme == "ldaps" and self.start_tls:
            raise ValueError("ldaps:// is TLS already; start_tls is for ldap:// only")
        if self.group_source == "group_search" and not self.group_base_dn:
            raise ValueError("group_source 'group_search' needs group_base_dn")
        encrypted = self.scheme == "ldaps" or self.start_tls
        if not encrypted and not self.allow_insecure_ldap and not is_loopback(self.host):
            raise ValueError(
                "ldap:// without start_tls would send passwords in clear text: use ldaps://, "
                "set start_tls, or set allow_insecure_ldap for a network you trust"
            )
        return self

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or (636 if self.scheme == "ldaps" else 389)

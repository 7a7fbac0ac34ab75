"""Settings of the external directories (LDAP / Active Directory, Atlassian Crowd REST), as
written in the settings file. A leaf below `config`, so the validated settings object can
hold them and the directories can read them."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        text = value.strip()
        try:
            parsed = urllib.parse.urlsplit(text)
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise ValueError("the Crowd URL must start with https:// (or http:// on this machine)")
        if not parsed.hostname:
            raise ValueError("the Crowd URL has no host name")
        if parsed.query or parsed.fragment or parsed.username or parsed.password:
            raise ValueError(
                "the Crowd URL must be a base URL without query, fragment or credentials, "
                "e.g. https://crowd.example.com/crowd"
            )
        if port == 0:
            raise ValueError("the port is not a number between 1 and 65535")
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
            and not _is_loopback(parsed.hostname or "")
        ):
            raise ValueError(
                "plain http would send passwords in clear text: use https, or set "
                "allow_insecure_http for a network you trust"
            )
        return self

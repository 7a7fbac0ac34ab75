"""The mail server the gateway sends e-mail codes through, as the admin sets it in the console:
the stored shape (password sealed), the edit an admin submits, and the rules a saved value
keeps. Pure values; loading, saving and sending live in `services.mail.delivery`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from email.utils import parseaddr
from enum import Enum
from typing import Any, Final

SMTP_KEY: Final = "smtp"  # the console setting's key
PASSWORD_PURPOSE: Final = "smtp.password"  # noqa: S105 (the sealing purpose, not a secret)
DEFAULT_TIMEOUT_S: Final = 10
MAX_TIMEOUT_S: Final = 120
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_IPV6 = re.compile(r"^\[?[0-9A-Fa-f:.]+\]?$")


class SmtpSecurity(Enum):
    NONE = "none"  # plain SMTP: only for a relay on the same host or a trusted network
    STARTTLS = "starttls"  # usually port 587
    TLS = "tls"  # TLS from the first byte, usually port 465


DEFAULT_PORTS: Final = {SmtpSecurity.NONE: 25, SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465}


@dataclass(frozen=True)
class SmtpConfig:
    """What is stored. The password is sealed and never leaves the server in clear, except
    to the mail server."""

    host: str
    port: int
    security: SmtpSecurity
    from_address: str
    username: str = ""
    password_sealed: str = ""
    timeout_s: int = DEFAULT_TIMEOUT_S

    @property
    def has_password(self) -> bool:
        return bool(self.password_sealed)


@dataclass(frozen=True)
class SmtpEdit:
    """What the admin typed, numbers still text so a rejected form comes back unchanged.
    An empty `password` keeps the stored one; an empty `username` means no login at all."""

    host: str
    port: str
    security: str
    from_address: str
    username: str = ""
    password: str = ""
    timeout_s: str = str(DEFAULT_TIMEOUT_S)

    @classmethod
    def of(cls, config: SmtpConfig | None) -> SmtpEdit:
        if config is None:
            return cls(host="", port="587", security=SmtpSecurity.STARTTLS.value, from_address="")
        return cls(
            host=config.host,
            port=str(config.port),
            security=config.security.value,
            from_address=config.from_address,
            username=config.username,
            timeout_s=str(config.timeout_s),
        )


def _whole_number(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.isascii() and stripped.isdigit() else None


def address_problem(text: str) -> str | None:
    """Why `text` is not a usable e-mail address (`Name <a@b>` is fine), or None."""
    if any(ch in text for ch in "\r\n\0"):
        return "line breaks are not allowed"
    _, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or " " in address or "." not in domain.strip("."):
        return "an e-mail address such as twofa@example.com"
    return None


def smtp_problems(edit: SmtpEdit, keeps_password: bool) -> dict[str, str]:
    """Every field's problem at once (empty: the edit can be saved)."""
    problems: dict[str, str] = {}
    host = edit.host.strip()
    if not host:
        problems["host"] = "the mail server's host name is required"
    elif "://" in host or not (_HOSTNAME.match(host) or _IPV6.match(host)):
        problems["host"] = "a host name or IP address only, such as smtp.example.com"
    port = _whole_number(edit.port)
    if port is None or not 1 <= port <= 65535:
        problems["port"] = "a port number between 1 and 65535"
    if edit.security not in {s.value for s in SmtpSecurity}:
        problems["security"] = "choose none, starttls or tls"
    if len(edit.username) > 255 or any(ch in edit.username for ch in "\r\n\0"):
        problems["username"] = "at most 255 characters on one line"
    if any(ch in edit.password for ch in "\r\n\0"):
        problems["password"] = "line breaks are not allowed"  # noqa: S105
    elif edit.username.strip() and not edit.password and not keeps_password:
        problems["password"] = "the password for this user name is required"  # noqa: S105
    if not edit.from_address.strip():
        problems["from_address"] = "the sender address is required"
    elif from_problem := address_problem(edit.from_address.strip()):
        problems["from_address"] = from_problem
    timeout = _whole_number(edit.timeout_s)
    if timeout is None or not 1 <= timeout <= MAX_TIMEOUT_S:
        problems["timeout_s"] = f"a whole number of seconds between 1 and {MAX_TIMEOUT_S}"
    return problems


def config_from(edit: SmtpEdit, password_sealed: str) -> SmtpConfig:
    """The value to store from an edit `smtp_problems` accepted."""
    username = edit.username.strip()
    return SmtpConfig(
        host=edit.host.strip().strip("[]"),
        port=int(edit.port.strip()),
        security=SmtpSecurity(edit.security),
        from_address=edit.from_address.strip(),
        username=username,
        password_sealed=password_sealed if username else "",  # no user name, no login
        timeout_s=int(edit.timeout_s.strip()),
    )


def config_to_json(config: SmtpConfig) -> dict[str, Any]:
    return {**asdict(config), "security": config.security.value}


def config_from_json(value: dict[str, Any]) -> SmtpConfig:
    return SmtpConfig(**{**value, "security": SmtpSecurity(value["security"])})


def redacted(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Audit shows whether the password changed, never the password."""
    if value is None:
        return None
    return {
        k: ("(set)" if v else "(not set)") if k == "password_sealed" else v
        for k, v in value.items()
    }

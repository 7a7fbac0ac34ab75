"""The sections of the settings file that describe one thing each: Duo (`[duo]`), the access
rules and protected domains (`[access]`), security keys (`[webauthn]`) and the Prometheus
endpoint (`[metrics]`). `settings.py` puts them together into `Settings`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from ipaddress import IPv4Network, IPv6Network
from typing import Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)

from twofa.duo.endpoint import DuoEndpoint

ACCESS_POLICIES: Final = ("bypass", "one_factor", "two_factor", "deny")
METRICS_TOKEN_MIN_LENGTH: Final = 24


class FailMode(Enum):
    SECURE = "secure"
    SAFE = "safe"


class DuoFactor(Enum):
    """How Duo may check a user, as the admin allows it. Phone calls and SMS cost Duo
    telephony credits; `passcode` is a code from Duo Mobile (or a hardware token)."""

    PUSH = "push"
    PHONE = "phone"
    SMS = "sms"
    PASSCODE = "passcode"


DEFAULT_DUO_FACTORS: Final = (DuoFactor.PUSH, DuoFactor.PASSCODE)


def duo_factors_problem(factors: Iterable[DuoFactor]) -> str | None:
    """Why this set of allowed factors cannot work, or None. A phone activated on twofa's
    set-up page has no number: it can only push and show passcodes."""
    chosen = set(factors)
    if not chosen:
        return "allow at least one way to verify with Duo"
    if not chosen & {DuoFactor.PUSH, DuoFactor.PASSCODE}:
        return (
            "allow Duo Push or Duo Mobile passcodes too: "
            "phones activated in twofa can only do those"
        )
    return None


class DuoSettings(BaseModel):
    """The Duo Auth API application; empty keys mean Duo Push is not configured yet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ikey: str = ""
    skey: SecretStr = SecretStr("")
    api_hostname: str = ""
    failmode: FailMode = FailMode.SECURE
    autopush: bool = True
    push_type: str = "Login request"
    application_name: str = "twofa"
    pushes_per_minute: int = Field(default=3, ge=1, le=60)
    # Push fatigue (services.duo.push_fatigue): pushes, calls and texts per user a day, and how
    # long they stop after the user answers one "This wasn't me" (never 0: no off switch).
    pushes_per_day: int = Field(default=20, ge=1, le=500)
    fraud_pause_minutes: int = Field(default=60, ge=1, le=10080)
    allowed_factors: tuple[DuoFactor, ...] = DEFAULT_DUO_FACTORS
    timeout_s: float = Field(default=10.0, gt=0)
    long_poll_s: float = Field(default=25.0, gt=0)
    # Outside dev and demo modes only Duo's own hosts are accepted as `api_hostname`, here and
    # in the console, API and CLI (services.settings.duo): a host pointed inward would make
    # the key check a probe of the internal network. True allows any (a proxy, a simulator).
    allow_custom_host: bool = False

    @field_validator("api_hostname")
    @classmethod
    def _usable_hostname(cls, value: str) -> str:
        if value:  # its form only; whose host it may be depends on the mode (Settings)
            DuoEndpoint.parse(value, allow_custom_host=True)  # InvalidEndpoint is a ValueError
        return value

    @field_validator("allowed_factors", mode="before")
    @classmethod
    def _factors_from_text(cls, value: object) -> object:
        # From the environment the list arrives as one string: TWOFA_DUO__ALLOWED_FACTORS=push,sms
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_factors")
    @classmethod
    def _workable_factors(cls, value: tuple[DuoFactor, ...]) -> tuple[DuoFactor, ...]:
        problem = duo_factors_problem(value)
        if problem:
            raise ValueError(problem)
        return tuple(factor for factor in DuoFactor if factor in value)  # one order, no repeats

    @property
    def configured(self) -> bool:
        return bool(self.ikey and self.skey.get_secret_value() and self.api_hostname)


class AccessRuleSettings(BaseModel):
    """One access rule as written in the settings file (see domain.access for the meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: tuple[str, ...] = Field(min_length=1)
    policy: str
    resources: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    networks: tuple[IPvAnyNetwork, ...] = ()

    @field_validator("domain", "resources", "users", "groups", "networks", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in ACCESS_POLICIES:
            raise ValueError(f"policy must be one of {', '.join(ACCESS_POLICIES)}")
        return value


class AccessSettings(BaseModel):
    """The applications twofa guards through forward-auth (nginx auth_request, Traefik,
    Caddy) or its own reverse proxy: which domains it answers for, who may reach what, and
    which proxies' X-Forwarded-* headers it believes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_policy: str = "deny"  # fail closed: an unlisted resource is refused
    domains: tuple[str, ...] = ()  # protected domains ("app.example.com", "*.example.com")
    cookie_domain: str = ""  # "example.com": one sign-in covers every subdomain
    trusted_proxies: tuple[IPvAnyNetwork, ...] = (
        IPv4Network("127.0.0.0/8"),
        IPv6Network("::1/128"),
    )
    trusted_networks: tuple[IPvAnyNetwork, ...] = ()  # sign-ins here skip a set-up 2FA
    rules: tuple[AccessRuleSettings, ...] = ()
    # `;` path parameters (`/page;jsessionid=…`) are refused (400) unless allowed: Tomcat
    # drops them before routing, so the rules then match the path without them.
    allow_path_parameters: bool = False

    @field_validator("default_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in ACCESS_POLICIES:
            raise ValueError(f"default_policy must be one of {', '.join(ACCESS_POLICIES)}")
        return value

    @field_validator("domains", "trusted_proxies", "trusted_networks", mode="before")
    @classmethod
    def _list_from_text(cls, value: object) -> object:
        if isinstance(value, str):  # from the environment: TWOFA_ACCESS__DOMAINS=a.com,b.com
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


_HOST_NAME: Final = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_ORIGIN: Final = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class WebAuthnSettings(BaseModel):
    """Security keys and passkeys. A key is bound to the relying party id (a host name:
    browsers refuse IP addresses) and answers only pages at the allowed origins
    (`https://sso.example.com`). Empty values follow `public_url`: its host, its origin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rp_id: str = ""
    rp_name: str = Field(default="twofa", min_length=1)
    origins: tuple[str, ...] = ()

    @field_validator("rp_id")
    @classmethod
    def _bare_host_name(cls, value: str) -> str:
        if value and not _HOST_NAME.fullmatch(value):
            raise ValueError("rp_id must be a host name such as example.com (no scheme, no port)")
        return value.lower()

    @field_validator("origins", mode="before")
    @classmethod
    def _origins_from_text(cls, value: object) -> object:
        if isinstance(value, str):  # TWOFA_WEBAUTHN__ORIGINS=https://a.example.com,https://b…
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("origins")
    @classmethod
    def _bare_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"origins: {origin!r} is not an origin such as https://sso.example.com"
                )
        return tuple(origin.lower() for origin in value)


class MetricsSettings(BaseModel):
    """`GET /metrics` for Prometheus (web/metrics.py). Off unless enabled, and then only for a
    scraper that passes every rule set here: its address in `networks` (behind a trusted
    proxy, the forwarded address), and `Authorization: Bearer <token>`. Enabled with neither
    rule is refused: to open it to every address, list `0.0.0.0/0` and `::/0` on purpose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # A secret: TWOFA_METRICS__TOKEN_FILE reads it from a file (Prometheus' `bearer_token_file`).
    token: SecretStr | None = None
    networks: tuple[IPvAnyNetwork, ...] = ()

    @field_validator("networks", mode="before")
    @classmethod
    def _list_from_text(cls, value: object) -> object:
        if isinstance(value, str):  # TWOFA_METRICS__NETWORKS=10.0.0.0/8,::1/128
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < METRICS_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"must be at least {METRICS_TOKEN_MIN_LENGTH} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    @model_validator(mode="after")
    def _guarded_when_enabled(self) -> MetricsSettings:
        if self.enabled and self.token is None and not self.networks:
            raise ValueError(
                "enabled needs a token or networks (the scrapers' addresses): the metrics "
                "tell an outsider how busy the gateway is and how sign-ins go"
            )
        return self

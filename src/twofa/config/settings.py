"""Validated settings: defaults, then an optional TOML file, then `TWOFA_*` environment variables
(`__` nests: `TWOFA_DUO__IKEY`), then `*_FILE` variables for secrets (`TWOFA_SECRET_KEY_FILE`).

Unknown keys are refused and every problem is reported at once. A placeholder secret is only
accepted in dev and demo modes. Settings are built once at start-up and passed in.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from enum import Enum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from twofa.config.directories import CrowdSettings, LdapSettings
from twofa.config.passwords import PasswordSettings
from twofa.config.secret_keys import secret_key_problems, secret_keys
from twofa.duo.endpoint import CustomHostRefused, DuoEndpoint
from twofa.errors import ConfigurationError

PLACEHOLDER_SECRET: Final = "change-me-dev-only-secret-key-0000000000"  # noqa: S105 (refused in production)
ENV_PREFIX: Final = "TWOFA_"
ACCESS_POLICIES: Final = ("bypass", "one_factor", "two_factor", "deny")
KNOWN_DIRECTORIES: Final = ("local", "ldap", "crowd")


class Mode(Enum):
    PRODUCTION = "production"
    DEV = "dev"
    DEMO = "demo"


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


REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    mode: Mode = Mode.PRODUCTION
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    database_url: str = "sqlite+aiosqlite:///var/twofa.db"
    # Database connections each gateway process keeps open (PostgreSQL). A request waits for a
    # free one rather than opening another: a connection opened and closed per request costs
    # more than the request (TLS negotiation, authentication, a backend process).
    database_pool_size: int = Field(default=20, ge=1, le=200)
    public_url: str = "http://127.0.0.1:8000"
    allowed_redirect_hosts: tuple[str, ...] = ()
    session_idle_minutes: int = Field(default=30, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    pending_login_minutes: int = Field(default=15, ge=1)
    # Password throttling (services.signin.login), each over `lockout_minutes`: a username is
    # locked per client network (an IPv4 address, an IPv6 /64), an address for every name;
    # failures for one username from all networks together never lock it (anyone could keep
    # its owner out) but, past their limit, slow each further attempt: 1 s, 2 s, 4 s … up to
    # `login_slowdown_max_seconds`, and the Overview and Status pages raise an alert.
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_ip: int = Field(default=20, ge=1)
    login_failures_per_user_all_networks: int = Field(default=100, ge=2)
    login_slowdown_max_seconds: int = Field(default=16, ge=1, le=60)
    lockout_minutes: int = Field(default=15, ge=1)
    # Admins use the console only after a second factor (services.second_factor.gate): the
    # demo may let them in on a password alone; any other mode refuses the setting.
    admins_without_second_factor: bool = False
    duo: DuoSettings = DuoSettings()
    passwords: PasswordSettings = PasswordSettings()
    access: AccessSettings = AccessSettings()
    # Where passwords are checked, in order; external ones provision a twofa user at first
    # sign-in. "local" is twofa's own user table.
    directories: tuple[str, ...] = ("local",)
    # How long a directory user's groups are trusted during a session before forward-auth
    # asks the directory again (in the background); 0: only at each sign-in.
    directory_groups_cache_s: int = Field(default=300, ge=0, le=86_400)
    crowd: CrowdSettings | None = None
    ldap: LdapSettings | None = None
    webauthn: WebAuthnSettings = WebAuthnSettings()
    # The CA (PEM) that signed the mail server's certificate, for an internal mail relay; it
    # replaces the system's CAs for SMTP. The server (host, port, TLS) is set in the console.
    smtp_ca_path: str | None = None
    # Redis, for several gateway processes or machines: each tells the others at once of an
    # ended session or a saved setting (services.state.change_feed). A secret: it may hold a
    # password (`TWOFA_REDIS_URL_FILE`). Unset: they follow within a second anyway.
    redis_url: SecretStr | None = None
    redis_channel: str = Field(default="twofa:changes", min_length=1, max_length=200)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES)}")
        return value

    @field_validator("smtp_ca_path")
    @classmethod
    def _smtp_ca_path_exists(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"the CA file {value!r} does not exist")
        return value

    @field_validator("directories", mode="before")
    @classmethod
    def _directories_from_text(cls, value: object) -> object:
        if isinstance(value, str):  # TWOFA_DIRECTORIES=local,crowd
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _directories_configured(self) -> Settings:
        for name in self.directories:
            if name not in KNOWN_DIRECTORIES:
                raise ValueError(
                    f"directories: unknown directory {name!r} "
                    f"(known: {', '.join(KNOWN_DIRECTORIES)})"
                )
            if name != "local" and getattr(self, name) is None:
                raise ValueError(f"directories: {name!r} is listed but [{name}] is not set")
        if len(set(self.directories)) != len(self.directories):
            raise ValueError("directories: each directory once")
        return self

    @model_validator(mode="after")
    def _all_networks_above_one_network(self) -> Settings:
        # One network alone is locked first: only failures from several networks (a
        # distributed attack) may reach the limit that slows everyone's sign-in for the name.
        if self.login_failures_per_user_all_networks <= self.login_failures_per_user:
            raise ValueError(
                "login_failures_per_user_all_networks must be greater than login_failures_per_user"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        # One key a line, newest first (config.secret_keys): keys being rotated.
        refused = frozenset({PLACEHOLDER_SECRET} if self.mode is Mode.PRODUCTION else ())
        problems = secret_key_problems(self.secret_key.get_secret_value(), refused=refused)
        if problems:
            raise ValueError(f"secret_key: {'; '.join(problems)}")
        return self

    @model_validator(mode="after")
    def _password_only_admins_in_demo_only(self) -> Settings:
        if self.admins_without_second_factor and self.mode is not Mode.DEMO:
            raise ValueError(
                "admins_without_second_factor is for the demo only: an admin console behind a "
                "password alone is one guessed password away from every account"
            )
        return self

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The keys of `secret_key`, newest first: the newest seals, every one opens."""
        return secret_keys(self.secret_key.get_secret_value())

    @model_validator(mode="after")
    def _duo_host_allowed(self) -> Settings:
        if self.duo.api_hostname:
            try:
                DuoEndpoint.parse(
                    self.duo.api_hostname, allow_custom_host=self.duo_custom_host_allowed
                )
            except CustomHostRefused as refused:
                raise ValueError(
                    f"duo.api_hostname: {refused}; another host needs dev or demo mode "
                    "or duo.allow_custom_host = true"
                ) from None
        return self

    @property
    def duo_custom_host_allowed(self) -> bool:
        """Whether the Duo API hostname may be any host, not only one of Duo's."""
        return self.mode is not Mode.PRODUCTION or self.duo.allow_custom_host

    @property
    def cookie_secure(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def is_demo(self) -> bool:
        return self.mode is Mode.DEMO

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges file, environment and secret files itself (in that order of
        # precedence, lowest first) so that unknown keys from any of them are refused alike.
        return (init_settings,)


def _secret_files(environ: dict[str, str], problems: list[str]) -> dict[str, Any]:
    """`TWOFA_SECRET_KEY_FILE=/run/secrets/k` and `TWOFA_DUO__SKEY_FILE=…` read the secret;
    an unreadable file is added to `problems`."""
    found: dict[str, Any] = {}
    for name, path in environ.items():
        if not (name.startswith(ENV_PREFIX) and name.endswith("_FILE")):
            continue
        keys = name.removeprefix(ENV_PREFIX).removesuffix("_FILE").lower().split("__")
        try:
            value = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            problems.append(f"{name}: cannot read {path}: {exc.strerror}")
            continue
        target = found
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return found


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None, environ: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    """Builds the settings or raises `ConfigurationError` listing every problem."""
    environ = dict(os.environ if environ is None else environ)
    file_values: dict[str, Any] = {}
    path = config_file or (Path(environ["TWOFA_CONFIG"]) if "TWOFA_CONFIG" in environ else None)
    if path is not None:
        try:
            file_values = tomllib.loads(path.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read settings file {path}: {exc}") from None
    env_only = {k: v for k, v in environ.items() if not k.endswith("_FILE") and k != "TWOFA_CONFIG"}
    problems: list[str] = []
    init = _merge(_merge(file_values, _env_as_dict(env_only)), _secret_files(environ, problems))
    init = _merge(init, overrides)
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        problems.extend(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
    if problems:
        raise ConfigurationError(f"invalid settings: {'; '.join(problems)}")
    return settings


def _env_as_dict(environ: dict[str, str]) -> dict[str, Any]:
    """`TWOFA_DUO__IKEY=x` becomes `{"duo": {"ikey": "x"}}`; lists are comma-separated."""
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name.removeprefix(ENV_PREFIX).lower().split("__")
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        value: Any = raw
        if keys[-1] == "allowed_redirect_hosts":
            value = tuple(part.strip() for part in raw.split(",") if part.strip())
        target[keys[-1]] = value
    return values

"""Validated settings: defaults, then an optional TOML file, then `TWOFA_*` environment variables
(`__` nests: `TWOFA_DUO__IKEY`), then `*_FILE` variables for secrets (`TWOFA_SECRET_KEY_FILE`).

Unknown keys are refused and every problem is reported at once. A placeholder secret is only
accepted in dev and demo modes. Settings are built once at start-up and passed in.
"""

from __future__ import annotations

import os
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from twofa.config.directories import CrowdSettings, LdapSettings
from twofa.config.passwords import PasswordSettings
from twofa.config.secret_keys import secret_key_problems, secret_keys
from twofa.config.sections import (
    AccessSettings,
    DuoSettings,
    MetricsSettings,
    WebAuthnSettings,
)
from twofa.duo.endpoint import CustomHostRefused, DuoEndpoint
from twofa.errors import ConfigurationError

PLACEHOLDER_SECRET: Final = "change-me-dev-only-secret-key-0000000000"  # noqa: S105 (refused in production)
ENV_PREFIX: Final = "TWOFA_"
KNOWN_DIRECTORIES: Final = ("local", "ldap", "crowd")


class Mode(Enum):
    PRODUCTION = "production"
    DEV = "dev"
    DEMO = "demo"


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
    # password (`TWOFA_REDIS_URL_FILE`).
    redis_url: SecretStr | None = None
    redis_channel: str = Field(default="twofa:changes", min_length=1, max_length=200)
    # How the gateway processes tell each other of changes, so forward-auth can answer the
    # sessions in use from memory. "auto": Redis with `redis_url`, else PostgreSQL's
    # LISTEN/NOTIFY, else (SQLite) sockets between the processes of this machine. "none":
    # every process reads each session in use again every second.
    change_feed: Literal["auto", "redis", "postgresql", "local", "none"] = "auto"
    # `GET /metrics` for Prometheus: off unless enabled, then behind a token and/or networks.
    metrics: MetricsSettings = MetricsSettings()
    # "json": the log is one JSON object per line (an audit record's line carries the audit
    # record's fields), for a log shipper; "text": lines for a person (cli.logging_setup).
    log_format: Literal["text", "json"] = "text"

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
    def change_feed_kind(self) -> str:
        """`change_feed` with "auto" resolved (services.runtime builds the feed)."""
        if self.change_feed != "auto":
            return self.change_feed
        if self.redis_url is not None:
            return "redis"
        if self.database_url.startswith("postgresql"):
            return "postgresql"
        return "local" if self.sqlite_file is not None else "none"

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite database's file, or None (another database, or SQLite in memory)."""
        scheme, _, path = self.database_url.partition(":///")
        if not scheme.startswith("sqlite") or path in ("", ":memory:"):
            return None
        return path.split("?", 1)[0]

    @model_validator(mode="after")
    def _change_feed_possible(self) -> Settings:
        needs = {
            "redis": (self.redis_url is not None, "redis_url"),
            "postgresql": (self.database_url.startswith("postgresql"), "a PostgreSQL database"),
            "local": (self.sqlite_file is not None, "an SQLite database file"),
        }.get(self.change_feed)
        if needs is not None and not needs[0]:
            raise ValueError(f"change_feed = {self.change_feed!r} needs {needs[1]}")
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

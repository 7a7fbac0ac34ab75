"""The Duo application as the console stores it (Advanced Settings): what is saved, what the
admin types, the checks of each field, and the proof against Duo (`ping` for reachability and
clock skew, `check` for the keys) that must pass before anything is saved.

The console, the API and the CLI all save through here, so this is where the API hostname is
held to Duo's own hosts outside dev and demo modes (`allow_custom_host`). The proof names
what went wrong in fixed words per kind of failure, never with what the host answered: an
admin session must not become a way to read or port-scan the internal network.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import asdict, dataclass
from typing import Any, Final

import httpx

from twofa.config import (
    DEFAULT_DUO_FACTORS,
    DuoFactor,
    FailMode,
    duo_factors_problem,
)
from twofa.duo import (
    CustomHostRefused,
    DuoApiError,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoError,
    DuoTimeouts,
    DuoTransportError,
    InvalidEndpoint,
)

log = logging.getLogger(__name__)

DUO_KEY: Final = "duo"
SKEY_PURPOSE: Final = "duo.skey"
MAX_CLOCK_SKEW_S: Final = 60
_IKEY = re.compile(r"^DI[A-Z0-9]{18}$")
# What the admin reads when the proof fails, one fixed text per kind of failure.
CANNOT_CONNECT: Final = (
    "cannot reach {host}: no answer (check the host name, the port and any firewall)"
)
TLS_REFUSED: Final = "cannot reach {host} securely: its TLS certificate was not accepted"
NOT_DUO: Final = (
    "{host} did not answer as the Duo Auth API does: check the API hostname "
    "(or Duo is having trouble: try again in a few minutes)"
)
KEYS_REFUSED: Final = "Duo refused these keys: check the integration key and the secret key"


@dataclass(frozen=True)
class DuoConsoleConfig:
    ikey: str = ""
    skey_sealed: str = ""
    api_hostname: str = ""
    failmode: FailMode = FailMode.SECURE
    autopush: bool = True
    push_type: str = "Login request"
    application_name: str = "twofa"
    pushes_per_minute: int = 3
    pushes_per_day: int = 20
    fraud_pause_minutes: int = 60
    allowed_factors: tuple[DuoFactor, ...] = DEFAULT_DUO_FACTORS

    @property
    def has_secret(self) -> bool:
        return bool(self.skey_sealed)


@dataclass(frozen=True)
class DuoEdit:
    """What the admin typed. An empty `skey` keeps the stored one."""

    ikey: str
    api_hostname: str
    skey: str = ""
    failmode: FailMode = FailMode.SECURE
    autopush: bool = True
    push_type: str = "Login request"
    application_name: str = "twofa"
    pushes_per_minute: int = 3
    pushes_per_day: int = 20
    fraud_pause_minutes: int = 60
    allowed_factors: tuple[DuoFactor, ...] = DEFAULT_DUO_FACTORS


def duo_config_from_json(value: dict[str, Any]) -> DuoConsoleConfig:
    # Rows saved before `allowed_factors` existed get the default (push and passcodes).
    factors = value.get("allowed_factors", [f.value for f in DEFAULT_DUO_FACTORS])
    return DuoConsoleConfig(
        **{
            **value,
            "failmode": FailMode(value.get("failmode", "secure")),
            "allowed_factors": tuple(DuoFactor(name) for name in factors),
        }
    )


def duo_config_to_json(config: DuoConsoleConfig) -> dict[str, Any]:
    return {
        **asdict(config),
        "failmode": config.failmode.value,
        "allowed_factors": [factor.value for factor in config.allowed_factors],
    }


def api_hostname_problem(api_hostname: str, *, allow_custom_host: bool) -> str | None:
    """Why this API hostname cannot be saved or used, or None. `allow_custom_host` is the
    settings' `duo_custom_host_allowed`: dev or demo mode, or `duo.allow_custom_host`."""
    try:
        DuoEndpoint.parse(api_hostname, allow_custom_host=allow_custom_host)
    except CustomHostRefused as refused:
        return (
            f"{refused}; another host needs dev or demo mode or the setting duo.allow_custom_host"
        )
    except InvalidEndpoint as invalid:
        return str(invalid)
    return None


def duo_field_problems(
    edit: DuoEdit, keeps_secret: bool, *, allow_custom_host: bool
) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not _IKEY.match(edit.ikey.strip()):
        problems["ikey"] = (
            "an integration key is 20 characters: DI followed by 18 letters or digits"
        )
    skey = edit.skey.strip()
    if not skey and not keeps_secret:
        problems["skey"] = "the secret key is required"
    elif skey and len(skey) != 40:
        problems["skey"] = f"a secret key is 40 characters, this one has {len(skey)}"
    if host_problem := api_hostname_problem(edit.api_hostname, allow_custom_host=allow_custom_host):
        problems["api_hostname"] = host_problem
    if not 1 <= edit.pushes_per_minute <= 60:
        problems["pushes_per_minute"] = "between 1 and 60"
    if not 1 <= edit.pushes_per_day <= 500:
        problems["pushes_per_day"] = "between 1 and 500"
    if not 1 <= edit.fraud_pause_minutes <= 10080:
        problems["fraud_pause_minutes"] = "between 1 and 10080 (a week)"
    if not edit.push_type.strip() or len(edit.push_type) > 100:
        problems["push_type"] = "1 to 100 characters"
    if not edit.application_name.strip() or len(edit.application_name) > 100:
        problems["application_name"] = "1 to 100 characters"
    factors_problem = duo_factors_problem(edit.allowed_factors)
    if factors_problem:
        problems["allowed_factors"] = factors_problem
    return problems


async def prove_duo_keys(
    http: httpx.AsyncClient,
    ikey: str,
    skey: str,
    api_hostname: str,
    now_s: float,
    *,
    allow_custom_host: bool,
) -> dict[str, str]:
    """Asks Duo whether these keys work; the problems found, by field (empty: all good)."""
    if host_problem := api_hostname_problem(api_hostname, allow_custom_host=allow_custom_host):
        return {"api_hostname": host_problem}  # e.g. saved in dev mode, read in production
    endpoint = DuoEndpoint.parse(api_hostname, allow_custom_host=True)
    client = DuoAuthClient(
        http,
        credentials=DuoCredentials(ikey, skey),
        endpoint=endpoint,
        timeouts=DuoTimeouts(connect=5, read=10, long_poll_read=10),
    )
    try:
        duo_time = await client.ping()
    except DuoError as exc:
        return failure_problem(endpoint, "ping", exc)
    if abs(duo_time - now_s) > MAX_CLOCK_SKEW_S:
        return {
            "api_hostname": f"this server's clock is {now_s - duo_time:+.0f} s off Duo's; "
            "fix the time (NTP) first"
        }
    try:
        await client.check()
    except DuoError as exc:
        return failure_problem(endpoint, "check", exc)
    return {}


def failure_problem(endpoint: DuoEndpoint, request: str, error: DuoError) -> dict[str, str]:
    """What a failed `ping` or `check` tells the admin, by field: a fixed text per kind of
    failure. The error's own words (the host's body, status text, headers) go to the log."""
    log.warning("Duo %s at %s failed: %r", request, endpoint.signed_host, error)
    host = endpoint.signed_host
    if isinstance(error, DuoTransportError):
        text = TLS_REFUSED if _tls_failure(error) else CANNOT_CONNECT
        return {"api_hostname": text.format(host=host)}
    if request == "check" and isinstance(error, DuoApiError) and error.is_bad_credentials:
        if error.code == 40102:
            return {"ikey": "Duo does not know this integration key"}
        if error.code == 40103:
            return {"skey": "Duo refused the signature: the secret key is wrong"}
        return {"ikey": KEYS_REFUSED}
    return {"api_hostname": NOT_DUO.format(host=host)}


def _tls_failure(error: BaseException) -> bool:
    """Whether a TLS handshake or certificate check lies anywhere under this error."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


@dataclass(frozen=True)
class ConnectionTest:
    """Test connection's answer: how far Duo's clock is from ours when the keys work, else
    what is wrong, by field (the same fields a rejected save names)."""

    problems: dict[str, str]
    clock_skew_s: float | None = None

    @property
    def connected(self) -> bool:
        return not self.problems

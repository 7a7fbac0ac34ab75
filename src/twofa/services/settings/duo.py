"""The Duo application as the console stores it (Advanced Settings): what is saved, what the
admin types, the checks of each field, and the proof against Duo (`ping` for reachability and
clock skew, `check` for the keys) that must pass before anything is saved."""

from __future__ import annotations

import re
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
    DuoApiError,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoError,
    DuoMalformedResponse,
    DuoTimeouts,
    DuoTransportError,
    InvalidEndpoint,
)

DUO_KEY: Final = "duo"
SKEY_PURPOSE: Final = "duo.skey"
MAX_CLOCK_SKEW_S: Final = 60
_IKEY = re.compile(r"^DI[A-Z0-9]{18}$")


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


def duo_field_problems(edit: DuoEdit, keeps_secret: bool) -> dict[str, str]:
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
    try:
        DuoEndpoint.parse(edit.api_hostname)
    except InvalidEndpoint as exc:
        problems["api_hostname"] = str(exc)
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
    http: httpx.AsyncClient, ikey: str, skey: str, api_hostname: str, now_s: float
) -> dict[str, str]:
    """Asks Duo whether these keys work; the problems found, by field (empty: all good)."""
    endpoint = DuoEndpoint.parse(api_hostname)
    client = DuoAuthClient(
        http,
        credentials=DuoCredentials(ikey, skey),
        endpoint=endpoint,
        timeouts=DuoTimeouts(connect=5, read=10, long_poll_read=10),
    )
    try:
        duo_time = await client.ping()
    except DuoMalformedResponse:
        return {"api_hostname": f"{endpoint.signed_host} answered, but not like a Duo API host"}
    except (DuoTransportError, DuoApiError) as exc:
        return {"api_hostname": f"cannot reach {endpoint.signed_host}: {exc}"}
    if abs(duo_time - now_s) > MAX_CLOCK_SKEW_S:
        return {
            "api_hostname": f"this server's clock is {now_s - duo_time:+.0f} s off Duo's; "
            "fix the time (NTP) first"
        }
    try:
        await client.check()
    except DuoApiError as exc:
        if exc.code == 40102:
            return {"ikey": "Duo does not know this integration key"}
        if exc.code == 40103:
            return {"skey": "Duo refused the signature: the secret key is wrong"}
        return {"api_hostname": f"Duo refused the check: {exc.message}"}
    except DuoError as exc:
        return {"api_hostname": f"the check failed: {exc}"}
    return {}


@dataclass(frozen=True)
class ConnectionTest:
    """Test connection's answer: how far Duo's clock is from ours when the keys work, else
    what is wrong, by field (the same fields a rejected save names)."""

    problems: dict[str, str]
    clock_skew_s: float | None = None

    @property
    def connected(self) -> bool:
        return not self.problems

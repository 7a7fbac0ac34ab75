"""/api/v1/settings: the console's Advanced Settings (the Duo application) and Two Factor
Settings. The Duo secret key is write-only: answers say only whether one is set."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from twofa.config import DuoFactor, FailMode
from twofa.services.settings.duo import DuoConsoleConfig, DuoEdit
from twofa.services.settings.two_factor import BackupPolicy, Enforcement, TwoFactorConfig
from twofa.web.api.auth import Api
from twofa.web.api.errors import API_FIELD_NAMES, ApiRoute, error_responses
from twofa.web.api.models import RequestModel, Text100, Text300

router = APIRouter(
    prefix="/settings",
    tags=["settings"],
    route_class=ApiRoute,
    responses=error_responses(401, 422),
)
REJECTED = error_responses(400)
DuoSource = Literal["console", "file", "none"]
Days = Annotated[int, Field(ge=0, le=365)]
MethodCode = Annotated[Text100, Field(min_length=1)]
FactorName = Literal["push", "phone", "sms", "passcode"]
DEFAULT_FACTOR_NAMES: tuple[FactorName, ...] = ("push", "passcode")
FACTORS_HELP = (
    "The Duo factors users may be offered (when their device can do them). Phone calls and "
    "SMS cost Duo telephony credits; push or passcode must be among them."
)

PER_DAY_HELP = (
    "Pushes, calls and texts to one user's phone in 24 hours (push fatigue); past it they "
    "stop for 24 hours, until an admin unlocks the user."
)
FRAUD_PAUSE_HELP = (
    'Minutes no push, call or text goes to a user after they answer one "This wasn\'t me"; '
    "an admin's unlock lifts the pause early."
)


class DuoSettingsOut(BaseModel):
    source: DuoSource = Field(
        description="Where the settings in force come from: saved in the console, the "
        "settings file, or nowhere yet."
    )
    ikey: str
    api_hostname: str
    secret_key_set: bool
    failmode: Literal["secure", "safe"]
    autopush: bool
    push_type: str
    application_name: str
    pushes_per_minute: int
    pushes_per_day: int = Field(description=PER_DAY_HELP)
    fraud_pause_minutes: int = Field(description=FRAUD_PAUSE_HELP)
    allowed_factors: list[FactorName] = Field(description=FACTORS_HELP)


class DuoSettingsIn(RequestModel):
    ikey: Text100 = Field(description="The integration key: DI and 18 letters or digits.")
    api_hostname: Text300 = Field(description="e.g. api-1234abcd.duosecurity.com")
    secret_key: Text100 | None = Field(
        default=None, description="40 characters; leave out or empty to keep the stored one."
    )
    failmode: Literal["secure", "safe"] = "secure"
    autopush: bool = True
    push_type: Text100 = "Login request"
    application_name: Text100 = "twofa"
    pushes_per_minute: Annotated[int, Field(ge=1, le=60)] = 3
    pushes_per_day: Annotated[int, Field(ge=1, le=500, description=PER_DAY_HELP)] = 20
    fraud_pause_minutes: Annotated[int, Field(ge=1, le=10080, description=FRAUD_PAUSE_HELP)] = 60
    allowed_factors: Annotated[list[FactorName], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: list(DEFAULT_FACTOR_NAMES), description=FACTORS_HELP
    )


class DuoTestOut(BaseModel):
    ok: bool
    problems: dict[str, str] = Field(description="What Duo found wrong, by field.")
    clock_skew_s: float | None = Field(description="Duo's clock minus ours, when connected.")


class TwoFactorSettings(RequestModel):
    methods: Annotated[list[MethodCode], Field(min_length=1, max_length=20)]
    first_method: MethodCode
    backup: Literal["none", "optional", "required"] = "none"
    backup_methods: Annotated[list[MethodCode], Field(default_factory=list, max_length=20)]
    enforcement: Literal["selected", "everyone"] = "selected"
    grace_postponements: Days = 0
    grace_days: Days = 0
    remember_device_days: Days = 0


def duo_out(
    fields: DuoEdit | DuoConsoleConfig, *, source: DuoSource, secret_key_set: bool
) -> DuoSettingsOut:
    return DuoSettingsOut(
        source=source,
        ikey=fields.ikey,
        api_hostname=fields.api_hostname,
        secret_key_set=secret_key_set,
        failmode=fields.failmode.value,
        autopush=fields.autopush,
        push_type=fields.push_type,
        application_name=fields.application_name,
        pushes_per_minute=fields.pushes_per_minute,
        pushes_per_day=fields.pushes_per_day,
        fraud_pause_minutes=fields.fraud_pause_minutes,
        allowed_factors=[factor.value for factor in fields.allowed_factors],
    )


def two_factor_out(config: TwoFactorConfig) -> TwoFactorSettings:
    return TwoFactorSettings(
        methods=list(config.methods),
        first_method=config.first_method,
        backup=config.backup.value,
        backup_methods=list(config.backup_methods),
        enforcement=config.enforcement.value,
        grace_postponements=config.grace_postponements,
        grace_days=config.grace_days,
        remember_device_days=config.remember_device_days,
    )


@router.get("/duo", summary="The Duo application in force (never the secret key)")
async def get_duo(api: Api) -> DuoSettingsOut:
    console = api.gateway.console
    saved = await console.duo()
    fields = await console.duo_edit_base()
    if saved is not None:
        return duo_out(fields, source="console", secret_key_set=saved.has_secret)
    file_duo = api.gateway.settings.duo
    return duo_out(
        fields,
        source="file" if file_duo.configured else "none",
        secret_key_set=bool(file_duo.skey.get_secret_value()),
    )


@router.put("/duo", summary="Check the keys against Duo, then save them", responses=REJECTED)
async def put_duo(api: Api, body: DuoSettingsIn) -> DuoSettingsOut:
    edit = DuoEdit(
        ikey=body.ikey,
        api_hostname=body.api_hostname,
        skey=body.secret_key or "",
        failmode=FailMode(body.failmode),
        autopush=body.autopush,
        push_type=body.push_type,
        application_name=body.application_name,
        pushes_per_minute=body.pushes_per_minute,
        pushes_per_day=body.pushes_per_day,
        fraud_pause_minutes=body.fraud_pause_minutes,
        allowed_factors=tuple(DuoFactor(name) for name in body.allowed_factors),
    )
    saved = await api.gateway.console.save_duo(edit, api.actor, api.client)
    return duo_out(saved, source="console", secret_key_set=saved.has_secret)


@router.post("/duo/test", summary="Ask Duo whether the settings in force work")
async def test_duo(api: Api) -> DuoTestOut:
    connection = await api.gateway.console.test_connection()
    problems = {API_FIELD_NAMES.get(name, name): why for name, why in connection.problems.items()}
    return DuoTestOut(
        ok=connection.connected, problems=problems, clock_skew_s=connection.clock_skew_s
    )


@router.get("/two-factor", summary="Which methods users may use, backup, enforcement, grace")
async def get_two_factor(api: Api) -> TwoFactorSettings:
    return two_factor_out(await api.gateway.console.two_factor())


@router.put("/two-factor", summary="Save the Two Factor Settings", responses=REJECTED)
async def put_two_factor(api: Api, body: TwoFactorSettings) -> TwoFactorSettings:
    config = TwoFactorConfig(
        methods=tuple(body.methods),
        first_method=body.first_method,
        backup=BackupPolicy(body.backup),
        backup_methods=tuple(body.backup_methods),
        enforcement=Enforcement(body.enforcement),
        grace_postponements=body.grace_postponements,
        grace_days=body.grace_days,
        remember_device_days=body.remember_device_days,
    )
    saved = await api.gateway.console.save_two_factor(config, api.actor, api.client)
    return two_factor_out(saved)

"""Admin console: Advanced Settings (the Duo application, proven against Duo before it is
saved) and Two Factor Settings (methods, backup method, enforcement, grace period, remembered
devices). Handlers read forms and render pages; the rules live in `ConsoleSettingsService`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.config import DuoFactor, FailMode
from twofa.services.settings.console import SettingsRejected
from twofa.services.settings.duo import ConnectionTest, DuoEdit, duo_field_problems
from twofa.services.settings.two_factor import BackupPolicy, Enforcement, TwoFactorConfig
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")


ADVANCED_URL: Final = "/admin/settings/advanced"
TWO_FACTOR_URL: Final = "/admin/settings/two-factor"
DUO_SAVED: Final = "Saved. Duo answered: keys are valid."
TWO_FACTOR_SAVED: Final = "Saved. The new Two Factor Settings apply from the next sign-in."
DUO_FIELD_LABELS: Final = {
    "ikey": "Integration key",
    "skey": "Secret key",
    "api_hostname": "API hostname",
}
NO_BACKUP_METHOD_YET: Final = (
    "No backup method is available yet (they arrive with the authenticator app, backup codes "
    "and the other methods), so Backup Method must stay “None” for now."
)
# Ways Duo may check a user, in the order the form lists them.
FACTOR_LABELS: Final = {
    DuoFactor.PUSH: "Duo Push",
    DuoFactor.PASSCODE: "Passcodes from Duo Mobile (or a Duo hardware token)",
    DuoFactor.PHONE: "Phone call (uses Duo telephony credits)",
    DuoFactor.SMS: "Passcodes by SMS (uses Duo telephony credits)",
}
# Every second factor the product has; those this gateway registered can be chosen.
METHOD_LABELS: Final = {
    "duo_push": "Duo Push Notification",
    "totp": "Authenticator app (TOTP)",
    "backup_codes": "Backup codes",
    "email_otp": "One-time code by e-mail",
    "security_questions": "Security questions",
    "webauthn": "Security key or passkey (WebAuthn)",
}
# A backup must work without the phone that Duo Push needs, so Duo Push is never one.
BACKUP_CANDIDATES: Final = tuple(code for code in METHOD_LABELS if code != "duo_push")


@dataclass(frozen=True)
class MethodChoice:
    code: str
    label: str
    available: bool


def method_choices(codes: tuple[str, ...], offered: tuple[str, ...]) -> list[MethodChoice]:
    return [MethodChoice(code, METHOD_LABELS[code], code in offered) for code in codes]


@dataclass(frozen=True)
class DuoForm:
    """The Duo form as typed (numbers still text), so a rejected form comes back unchanged.
    The secret key is not here: it is never rendered back."""

    ikey: str
    api_hostname: str
    failmode: str
    autopush: bool
    push_type: str
    application_name: str
    pushes_per_minute: str
    pushes_per_day: str
    fraud_pause_minutes: str
    allowed_factors: tuple[str, ...] | None  # None: a form without the checkboxes (keep them)

    @classmethod
    def of(cls, edit: DuoEdit) -> DuoForm:
        return cls(
            ikey=edit.ikey,
            api_hostname=edit.api_hostname,
            failmode=edit.failmode.value,
            autopush=edit.autopush,
            push_type=edit.push_type,
            application_name=edit.application_name,
            pushes_per_minute=str(edit.pushes_per_minute),
            pushes_per_day=str(edit.pushes_per_day),
            fraud_pause_minutes=str(edit.fraud_pause_minutes),
            allowed_factors=tuple(factor.value for factor in edit.allowed_factors),
        )

    @classmethod
    def typed(cls, form: FormData) -> DuoForm:
        # No box ticked sends nothing at all: the hidden marker tells that from a form
        # without the boxes.
        factors = tuple(str(value) for value in form.getlist("allowed_factors"))
        return cls(
            ikey=_text(form, "ikey"),
            api_hostname=_text(form, "api_hostname"),
            failmode=_text(form, "failmode"),
            autopush=bool(form.get("autopush")),
            push_type=_text(form, "push_type"),
            application_name=_text(form, "application_name"),
            pushes_per_minute=_text(form, "pushes_per_minute"),
            pushes_per_day=_text(form, "pushes_per_day"),
            fraud_pause_minutes=_text(form, "fraud_pause_minutes"),
            allowed_factors=factors if form.get("allowed_factors_shown") else None,
        )


def duo_edit_from(
    form: DuoForm, skey: str, keeps_secret: bool, *, allow_custom_host: bool
) -> DuoEdit:
    """The edit to save, or SettingsRejected naming every field that cannot even be read
    (with the other fields' problems, judged as the save would: `allow_custom_host`)."""
    problems: dict[str, str] = {}
    pushes = _whole_number(form.pushes_per_minute)
    if pushes is None:
        problems["pushes_per_minute"] = "a whole number between 1 and 60"
    per_day = _whole_number(form.pushes_per_day)
    if per_day is None:
        problems["pushes_per_day"] = "a whole number between 1 and 500"
    pause = _whole_number(form.fraud_pause_minutes)
    if pause is None:
        problems["fraud_pause_minutes"] = "a whole number of minutes between 1 and 10080"
    try:
        failmode = FailMode(form.failmode)
    except ValueError:
        problems["failmode"] = "choose secure or safe"
        failmode = FailMode.SECURE
    factors = []
    for name in form.allowed_factors or ():
        try:
            factors.append(DuoFactor(name))
        except ValueError:
            problems["allowed_factors"] = f"unknown factor {name!r}"
    edit = DuoEdit(
        ikey=form.ikey,
        api_hostname=form.api_hostname,
        skey=skey,
        failmode=failmode,
        autopush=form.autopush,
        push_type=form.push_type,
        application_name=form.application_name,
        pushes_per_minute=pushes if pushes is not None else 1,
        pushes_per_day=per_day if per_day is not None else 1,
        fraud_pause_minutes=pause if pause is not None else 1,
        allowed_factors=tuple(factors),
    )
    if problems:  # report the other fields' problems too, in one round trip
        checked = duo_field_problems(edit, keeps_secret, allow_custom_host=allow_custom_host)
        raise SettingsRejected({**checked, **problems})
    return edit


@dataclass(frozen=True)
class TwoFactorForm:
    """The Two Factor Settings form as typed (numbers still text)."""

    methods: tuple[str, ...]
    first_method: str
    backup: str
    backup_methods: tuple[str, ...]
    enforcement: str
    grace_postponements: str
    grace_days: str
    remember_device_days: str

    @classmethod
    def of(cls, config: TwoFactorConfig) -> TwoFactorForm:
        return cls(
            methods=config.methods,
            first_method=config.first_method,
            backup=config.backup.value,
            backup_methods=config.backup_methods,
            enforcement=config.enforcement.value,
            grace_postponements=str(config.grace_postponements),
            grace_days=str(config.grace_days),
            remember_device_days=str(config.remember_device_days),
        )

    @classmethod
    def typed(cls, form: FormData) -> TwoFactorForm:
        return cls(
            methods=tuple(str(value) for value in form.getlist("methods")),
            first_method=_text(form, "first_method"),
            backup=_text(form, "backup"),
            backup_methods=tuple(str(value) for value in form.getlist("backup_methods")),
            enforcement=_text(form, "enforcement"),
            grace_postponements=_text(form, "grace_postponements"),
            grace_days=_text(form, "grace_days"),
            remember_device_days=_text(form, "remember_device_days"),
        )


NUMBER_FIELDS: Final = ("grace_postponements", "grace_days", "remember_device_days")


def two_factor_config_from(form: TwoFactorForm) -> TwoFactorConfig:
    """The settings to save, or SettingsRejected for fields that are not even readable."""
    problems: dict[str, str] = {}
    numbers: dict[str, int] = {}
    for name in NUMBER_FIELDS:
        value = _whole_number(getattr(form, name))
        if value is None:
            problems[name] = "a whole number between 0 and 365"
        numbers[name] = value or 0
    try:
        backup = BackupPolicy(form.backup)
    except ValueError:
        problems["backup"] = "choose none, optional or required"
        backup = BackupPolicy.NONE
    try:
        enforcement = Enforcement(form.enforcement)
    except ValueError:
        problems["enforcement"] = "choose everyone or selected users and groups"
        enforcement = Enforcement.SELECTED
    if problems:
        raise SettingsRejected(problems)
    return TwoFactorConfig(
        methods=form.methods,
        first_method=form.first_method,
        backup=backup,
        backup_methods=form.backup_methods,
        enforcement=enforcement,
        **numbers,
    )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _whole_number(text: str) -> int | None:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else None


# ---- Advanced Settings ------------------------------------------------------------------


async def _advanced_page(
    request: Request,
    admin: Admin,
    form: DuoForm,
    *,
    problems: dict[str, str] | None = None,
    notice: str | None = None,
    connection: ConnectionTest | None = None,
) -> Response:
    gateway = gateway_of(request)
    saved = await gateway.console.duo()
    file_duo = gateway.settings.duo
    if saved is not None:
        skey_state = "set" if saved.has_secret else "not set"
    elif file_duo.skey.get_secret_value():
        skey_state = "set in the settings file (type it again to save it in the console)"
    else:
        skey_state = "not set"
    return render(
        request,
        "admin/advanced_settings.html",
        status_code=400 if problems else 200,
        title="Advanced Settings",
        active_tab="Advanced Settings",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        form=form,
        problems=problems or {},
        notice=notice,
        connection=connection,
        field_labels=DUO_FIELD_LABELS,
        skey_state=skey_state,
        factor_labels=FACTOR_LABELS,
        offers_simulator=gateway.settings.is_demo and file_duo.configured,
    )


@router.get("/settings/advanced")
async def advanced_settings(request: Request, admin: SignedInAdmin) -> Response:
    base = await gateway_of(request).console.duo_edit_base()
    notice = DUO_SAVED if request.query_params.get("saved") else None
    return await _advanced_page(request, admin, DuoForm.of(base), notice=notice)


@router.post("/settings/advanced")
async def save_advanced_settings(request: Request, admin: SignedInAdmin) -> Response:
    console = gateway_of(request).console
    submitted = await request.form()
    form = DuoForm.typed(submitted)
    if form.allowed_factors is None:
        form = replace(
            form, allowed_factors=DuoForm.of(await console.duo_edit_base()).allowed_factors
        )
    saved = await console.duo()
    try:
        edit = duo_edit_from(
            form,
            _text(submitted, "skey"),
            bool(saved and saved.has_secret),
            allow_custom_host=console.allows_custom_duo_host,
        )
        await console.save_duo(edit, admin.username, client_of(request))
    except SettingsRejected as rejected:
        return await _advanced_page(request, admin, form, problems=rejected.problems)
    return RedirectResponse(f"{ADVANCED_URL}?saved=1", status_code=303)


@router.post("/settings/advanced/test")
async def run_connection_test(request: Request, admin: SignedInAdmin) -> Response:
    console = gateway_of(request).console
    connection = await console.test_connection()
    base = await console.duo_edit_base()
    return await _advanced_page(request, admin, DuoForm.of(base), connection=connection)


@router.post("/settings/advanced/simulator")
async def use_bundled_simulator(request: Request, admin: SignedInAdmin) -> Response:
    gateway = gateway_of(request)
    if not (gateway.settings.is_demo and gateway.settings.duo.configured):
        return RedirectResponse(ADVANCED_URL, status_code=303)
    try:
        await gateway.console.save_duo_from_settings_file(admin.username, client_of(request))
    except SettingsRejected as rejected:
        file_duo = gateway.settings.duo
        form = replace(
            DuoForm.of(await gateway.console.duo_edit_base()),
            ikey=file_duo.ikey,
            api_hostname=file_duo.api_hostname,
        )
        return await _advanced_page(request, admin, form, problems=rejected.problems)
    return RedirectResponse(f"{ADVANCED_URL}?saved=simulator", status_code=303)


# ---- Two Factor Settings ----------------------------------------------------------------


def _two_factor_page(
    request: Request,
    admin: Admin,
    form: TwoFactorForm,
    *,
    problems: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    offered = gateway_of(request).console.offered_methods
    backup_choices = method_choices(BACKUP_CANDIDATES, offered)
    problems = dict(problems or {})
    if "backup_methods" in problems and not any(c.available for c in backup_choices):
        problems["backup_methods"] = f"{problems['backup_methods']}. {NO_BACKUP_METHOD_YET}"
    return render(
        request,
        "admin/two_factor_settings.html",
        status_code=400 if problems else 200,
        title="Two Factor Settings",
        active_tab="Two Factor Settings",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        form=form,
        problems=problems,
        notice=notice,
        method_choices=method_choices(tuple(METHOD_LABELS), offered),
        backup_choices=backup_choices,
        no_backup_method_yet=NO_BACKUP_METHOD_YET,
    )


@router.get("/settings/two-factor")
async def two_factor_settings(request: Request, admin: SignedInAdmin) -> Response:
    config = await gateway_of(request).console.two_factor()
    notice = TWO_FACTOR_SAVED if request.query_params.get("saved") else None
    return _two_factor_page(request, admin, TwoFactorForm.of(config), notice=notice)


@router.post("/settings/two-factor")
async def save_two_factor_settings(request: Request, admin: SignedInAdmin) -> Response:
    form = TwoFactorForm.typed(await request.form())
    try:
        config = two_factor_config_from(form)
        await gateway_of(request).console.save_two_factor(
            config, admin.username, client_of(request)
        )
    except SettingsRejected as rejected:
        return _two_factor_page(request, admin, form, problems=rejected.problems)
    return RedirectResponse(f"{TWO_FACTOR_URL}?saved=1", status_code=303)

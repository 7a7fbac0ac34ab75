"""Admin console: E-mail Settings, the mail server e-mail codes go through, Send test e-mail,
and who chooses the address codes go to. Handlers read forms and render the page; the rules
live in `SmtpSettingsService` and `EmailCodeOptionsService`. The password is never rendered
back: an empty field keeps the stored one."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.domain.smtp_settings import SmtpEdit, SmtpSecurity
from twofa.services.mail.delivery import SendTestOutcome
from twofa.services.settings.console import SettingsRejected
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")


EMAIL_URL: Final = "/admin/settings/email"
TAB: Final = "E-mail Settings"
SAVED: Final = "Saved. The next e-mail code uses this mail server."
ADDRESSES_SAVED: Final = {
    True: "Saved. Users now choose the address at set-up and confirm it with a code.",
    False: "Saved. Codes now go to the account's address; addresses users chose stay in use.",
}
SECURITY_LABELS: Final = {
    SmtpSecurity.STARTTLS: "STARTTLS (usually port 587)",
    SmtpSecurity.TLS: "TLS from the start (usually port 465)",
    SmtpSecurity.NONE: "None: plain text, only for a relay on this host or a trusted network",
}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def edit_typed(form: FormData) -> SmtpEdit:
    return SmtpEdit(
        host=_text(form, "host"),
        port=_text(form, "port"),
        security=_text(form, "security"),
        from_address=_text(form, "from_address"),
        username=_text(form, "username"),
        password=_text(form, "password"),
        timeout_s=_text(form, "timeout_s"),
    )


async def _page(
    request: Request,
    admin: Admin,
    form: SmtpEdit,
    *,
    problems: dict[str, str] | None = None,
    notice: str | None = None,
    test: SendTestOutcome | None = None,
    test_to: str = "",
) -> Response:
    saved = await gateway_of(request).smtp.get()
    return render(
        request,
        "admin/email_settings.html",
        status_code=400 if problems else 200,
        title=TAB,
        active_tab=TAB,
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        form=form,
        problems=problems or {},
        notice=notice,
        test=test,
        test_to=test_to,
        configured=saved is not None,
        users_choose_address=await gateway_of(request).email_codes.users_choose_address(),
        password_state="set" if saved is not None and saved.has_password else "not set",
        security_labels={security.value: label for security, label in SECURITY_LABELS.items()},
    )


@router.get("/settings/email")
async def email_settings(request: Request, admin: SignedInAdmin) -> Response:
    saved = await gateway_of(request).smtp.get()
    notice = SAVED if request.query_params.get("saved") else None
    if (addresses := request.query_params.get("addresses")) in ("on", "off"):
        notice = ADDRESSES_SAVED[addresses == "on"]
    return await _page(request, admin, SmtpEdit.of(saved), notice=notice)


@router.post("/settings/email")
async def save_email_settings(request: Request, admin: SignedInAdmin) -> Response:
    form = edit_typed(await request.form())
    try:
        await gateway_of(request).smtp.save(form, admin.username, client_of(request))
    except SettingsRejected as rejected:
        # The password is not rendered back, even a rejected one
        return await _page(request, admin, form, problems=rejected.problems)
    return RedirectResponse(f"{EMAIL_URL}?saved=1", status_code=303)


@router.post("/settings/email/test")
async def send_test_email(request: Request, admin: SignedInAdmin) -> Response:
    smtp = gateway_of(request).smtp
    to = _text(await request.form(), "to")
    outcome = await smtp.send_test(to, admin.username, client_of(request))
    form = SmtpEdit.of(await smtp.get())
    return await _page(request, admin, form, test=outcome, test_to=to)


@router.post("/settings/email/addresses")
async def save_address_choice(request: Request, admin: SignedInAdmin) -> Response:
    on = _text(await request.form(), "users_choose_address") == "on"
    await gateway_of(request).email_codes.set_users_choose_address(
        on, admin.username, client_of(request)
    )
    return RedirectResponse(f"{EMAIL_URL}?addresses={'on' if on else 'off'}", status_code=303)

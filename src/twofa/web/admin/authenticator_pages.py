"""Admin console: the Authenticator app page, the name apps show above a user's codes. The
handler reads the form and renders the page; the rule and the audit live in
`AuthenticatorOptionsService`."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from twofa.methods.totp import DEFAULT_ISSUER, MAX_ISSUER_LENGTH
from twofa.services.settings.console import SettingsRejected
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

PAGE_URL: Final = "/admin/settings/authenticator-app"
SAVED: Final = "Saved. Keys set up from now on show this name; keys already in an app keep theirs."

router = APIRouter(prefix=PAGE_URL)


async def _page(
    request: Request,
    admin: Admin,
    typed_issuer: str,
    *,
    problems: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    return render(
        request,
        "admin/authenticator_settings.html",
        status_code=400 if problems else 200,
        title="Authenticator app",
        active_tab="Two Factor Settings",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        issuer=typed_issuer,
        default_issuer=DEFAULT_ISSUER,
        max_issuer_length=MAX_ISSUER_LENGTH,
        problems=problems or {},
        notice=notice,
    )


@router.get("")
async def authenticator_settings(request: Request, admin: SignedInAdmin) -> Response:
    notice = SAVED if request.query_params.get("saved") else None
    return await _page(
        request, admin, await gateway_of(request).authenticator_app.issuer(), notice=notice
    )


@router.post("")
async def save_authenticator_settings(request: Request, admin: SignedInAdmin) -> Response:
    typed = (await request.form()).get("issuer")
    typed = typed if isinstance(typed, str) else ""
    try:
        await gateway_of(request).authenticator_app.set_issuer(
            typed, admin.username, client_of(request)
        )
    except SettingsRejected as rejected:
        return await _page(request, admin, typed, problems=rejected.problems)
    return RedirectResponse(f"{PAGE_URL}?saved=1", status_code=303)

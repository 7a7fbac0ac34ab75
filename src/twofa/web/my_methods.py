"""The My 2FA page: a signed-in user's methods, with add, remove, rename and "make default",
and the applications they allowed to receive their details (services.idp.consent), with
revoke. Removing a method needs a recent second factor; the page sends the user to verify
first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from twofa.services.second_factor.gate import StepUpRequired
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state.sessions import Level
from twofa.web.context import client_of, gateway_of, session_at
from twofa.web.templating import render

router = APIRouter()
MY_2FA = "/my-2fa"
DONE_MESSAGES = {
    "removed": "Removed.",
    "renamed": "Renamed.",
    "default": "Default method changed.",
    "added": "Added.",
    "forgotten": "That device will be asked for a second factor again.",
    "all_forgotten": "Every remembered device will be asked for a second factor again.",
    "revoked": "That application will ask for your consent again.",
}


async def _page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    session = await session_at(request, Level.SIGNED_IN)
    assert session.user_id is not None
    gateway = gateway_of(request)
    mine = await gateway.my_methods.overview(session.user_id)
    devices = await gateway.devices.of_user(session.user_id)
    consents = await gateway.oidc.consents.of_user(session.user_id)
    done = DONE_MESSAGES.get(request.query_params.get("done", ""))
    if request.query_params.get("need") == "second_factor":
        error = error or (
            "The application you opened requires two-factor authentication. "
            "Add a method below, then open it again."
        )
    return render(
        request,
        "my_factors.html",
        status_code=status_code,
        title="My 2FA",
        mine=mine,
        devices=devices,
        consents=consents,
        # Change address only when users choose it: else set-up takes the account's again
        users_choose_address=await gateway.email_codes.users_choose_address(),
        csrf_token=session.csrf_token,
        done=done,
        error=error,
    )


@router.get(MY_2FA)
async def my_factors_page(request: Request) -> Response:
    return await _page(request)


@router.post(MY_2FA + "/{action}")
async def change(request: Request, action: str) -> Response:
    session = await session_at(request, Level.SIGNED_IN)
    gateway = gateway_of(request)
    form = await request.form()
    client = client_of(request)
    credential = str(form.get("credential", ""))
    application = str(form.get("application", ""))
    try:
        if action == "remove" and credential.isdigit():
            await gateway.my_methods.remove(session, int(credential), client)
            done = "removed"
        elif action == "rename" and credential.isdigit():
            label = str(form.get("label", ""))
            await gateway.my_methods.rename(session, int(credential), label, client)
            done = "renamed"
        elif action == "forget":
            assert session.user_id is not None
            await gateway.devices.forget(session.user_id, str(form.get("device", "")), client)
            done = "forgotten"
        elif action == "forget-all":
            assert session.user_id is not None
            await gateway.devices.forget_all(session.user_id, client)
            done = "all_forgotten"
        elif action == "revoke" and application.isdigit() and len(application) <= 9:
            assert session.user_id is not None  # 9 digits: fits an integer column
            await gateway.oidc.consents.revoke(session.user_id, int(application), client)
            done = "revoked"
        elif action == "default":
            await gateway.my_methods.set_default(session, str(form.get("method", "")), client)
            done = "default"
        else:
            return await _page(request, "That change is not possible.", 400)
    except StepUpRequired as step_up:  # web/errors.py sends the user to verify, then back
        raise step_up.returning_to(MY_2FA) from None
    except SecondFactorError as exc:
        return await _page(request, exc.message, 400)
    return RedirectResponse(f"{MY_2FA}?done={done}", status_code=303)

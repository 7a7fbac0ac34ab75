"""The second-factor pages: the first-login set-up (intro → Duo Push set-up → push) and the
validation page of every later sign-in, plus the small JSON endpoints their script polls.

All of them need a session that passed the password and still owes a second factor
(`Level.AWAITING_SECOND_FACTOR`). Decisions live in
`DuoPushService`; these handlers only translate them into pages, JSON and cookies.
"""

from __future__ import annotations

import io
from dataclasses import replace

import segno
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from twofa.config import DuoFactor
from twofa.methods.registry import DUO_PUSH
from twofa.services.duo.factors import DuoFactorService, FactorNotAllowed
from twofa.services.duo.push import DuoPushService
from twofa.services.duo.push_fatigue import without_phone_requests
from twofa.services.duo.rules import CALLING, Bypass, SetupKind, SetupView
from twofa.services.second_factor.outcomes import Completion, FailOpen, SecondFactorError
from twofa.services.state.sessions import Level, SessionView
from twofa.web.context import (
    client_of,
    gateway_of,
    session_at,
    session_in,
    set_device_cookie,
    set_session_cookie,
)
from twofa.web.templating import render

router = APIRouter(prefix="/2fa")
NO_DUO_DEVICE = (
    "Duo no longer knows a phone for your account, and a new one can only be set up once you "
    "have verified with another method. Use another method, or ask your administrator to "
    "reset your two-factor authentication."
)
# A second factor is asked at sign-in (PASSWORD) and to confirm a sensitive change (SIGNED_IN).
VERIFYING = (Level.AWAITING_SECOND_FACTOR, Level.SIGNED_IN)


class MethodUnavailable(SecondFactorError):
    """2FA is required but no method is configured: fail closed and say so."""


async def duo_of(request: Request) -> DuoPushService:
    duo = await gateway_of(request).current_duo()
    if duo is None:
        raise MethodUnavailable(
            "Two-factor authentication is required for your account, but Duo Push is not "
            "configured yet. Ask your administrator to set it up."
        )
    return duo


def method_url(code: str) -> str:
    """Where a user verifies with `code`."""
    return "/2fa/validate" if code == DUO_PUSH else f"/2fa/m/{code}"


def landing_after(completion: Completion) -> str:
    """Where a finished second factor leads: `/2fa/after` decides whether the backup-method
    step comes first (always while a required one is missing, once after a first enrolment
    when it is optional), then sends the user where they were going."""
    return "/2fa/after?new=1" if completion.enrolled_now else "/2fa/after"


def completed(request: Request, completion: Completion) -> RedirectResponse:
    response = RedirectResponse(landing_after(completion), status_code=303)
    set_session_cookie(request, response, completion.token)
    return response


async def fail_open(request: Request, session: SessionView) -> Completion:
    """failmode safe: Duo could not be asked, so the password alone signs the user in where
    the gate allows it (a sign-in of a user who has Duo Push; never to confirm a change)."""
    duo = await duo_of(request)
    return await duo.bypass(session, client_of(request), Bypass.FAILMODE_SAFE)


async def remember_days_for(request: Request, session: SessionView) -> int:
    """The "Remember this device" offer: at sign-in only, and only when the admin allows."""
    if session.level is not Level.AWAITING_SECOND_FACTOR:
        return 0
    return await gateway_of(request).devices.days()


async def remember_device_if_asked(
    request: Request,
    response: Response,
    session: SessionView,
    completion: Completion,
    remember: object,
) -> None:
    """Remember this device, when the user ticked it at sign-in (not when confirming a
    change) and the admin allows it; the service refuses a sign-in with no second factor."""
    if remember != "on" or session.level is not Level.AWAITING_SECOND_FACTOR:
        return
    remembered = await gateway_of(request).devices.remember(completion, client_of(request))
    if remembered is not None:
        set_device_cookie(request, response, *remembered)


def activation_qr_svg(activation_code: str) -> str:
    """The activation QR as inline SVG, drawn here so it works without reaching Duo."""
    out = io.BytesIO()
    segno.make(activation_code, error="m").save(
        out, kind="svg", scale=5, border=2, xmldecl=False, svgns=True
    )
    return out.getvalue().decode("utf-8")


@router.get("")
async def second_factor_start(request: Request) -> Response:
    """Validation with the user's default method, or the set-up of the admin's first method
    for a user who has none yet."""
    session = await session_at(request, Level.AWAITING_SECOND_FACTOR)
    gateway = gateway_of(request)
    assert session.user_id is not None
    usable = await gateway.gate.usable_methods(session.user_id)
    if usable:
        return RedirectResponse(method_url(usable[0]), status_code=303)
    first = (await gateway.console.two_factor()).first_method
    if first == DUO_PUSH:
        await duo_of(request)  # fails closed, with the reason, when Duo is not configured
    method_title = gateway.second_factor.registry.get(first).title
    grace = await gateway.grace.status(session)
    return render(
        request,
        "setup_intro.html",
        title="Set up two-factor authentication",
        grace=grace,
        csrf_token=session.csrf_token,
        first_method=first,
        method_title=method_title,
        setup_url="/2fa/duo/setup" if first == DUO_PUSH else f"/2fa/m/{first}/enrol",
    )


@router.post("/postpone")
async def postpone_enrolment(request: Request) -> Response:
    """The grace period: sign in without 2FA this time, while the admin allows it."""
    session = await session_at(request, Level.AWAITING_SECOND_FACTOR)
    completion = await gateway_of(request).grace.postpone(session, client_of(request))
    return completed(request, completion)


async def _setup_or_complete(
    request: Request, session: SessionView, *, enrol: bool
) -> SetupView | Response:
    """The set-up (`enrol`) or validation page's view of Duo, or the sign-in when Duo waives
    the second factor or cannot be asked and the gate lets the user in without it."""
    duo = await duo_of(request)
    try:
        setup = await (
            duo.setup(session, client_of(request)) if enrol else _duo_view(request, duo, session)
        )
    except FailOpen:
        return completed(request, await fail_open(request, session))
    if setup.kind is SetupKind.BYPASS:
        completion = await duo.bypass(session, client_of(request), Bypass.DUO_ALLOWS)
        return completed(request, completion)
    if setup.kind is SetupKind.DENIED:
        raise SecondFactorError(
            "Duo's policy does not allow you to sign in. Contact your administrator."
        )
    return setup


@router.get("/duo/setup")
async def duo_setup(request: Request) -> Response:
    session = await session_in(request, *VERIFYING)
    setup = await _setup_or_complete(request, session, enrol=True)
    if isinstance(setup, Response):
        return setup
    qr = activation_qr_svg(setup.activation_code) if setup.activation_code else None
    return render(
        request,
        "duo_setup.html",
        title="Set up Duo Push",
        setup=setup,
        qr_svg=qr,
        csrf_token=session.csrf_token,
        activated=setup.kind is SetupKind.READY,
    )


@router.get("/validate")
async def validate(request: Request) -> Response:
    session = await session_in(request, *VERIFYING)
    setup = await _setup_or_complete(request, session, enrol=False)
    if isinstance(setup, Response):
        return setup
    if setup.kind is SetupKind.ACTIVATE and setup.activation_code:  # a first set-up
        return RedirectResponse("/2fa/duo/setup", status_code=303)
    if setup.kind is SetupKind.ACTIVATE:  # a password alone may not set up another phone
        raise SecondFactorError(NO_DUO_DEVICE)
    # Back from "Text Me Passcodes": show the passcode field, and no push over it.
    sms_sent = request.query_params.get("sms") == "sent" and bool(setup.offer.sms)
    return await _validation_page(request, session, setup, sms_sent=sms_sent)


async def _validation_page(
    request: Request,
    session: SessionView,
    setup: SetupView,
    *,
    sms_sent: bool = False,
    passcode_error: str | None = None,
) -> Response:
    """The validation page, first shown or after a wrong passcode. After a fraud report it
    says why pushes are paused and offers nothing that reaches the phone (no autopush)."""
    duo = await duo_of(request)
    pause_notice = await duo.pause_notice(session)
    if pause_notice is not None:
        setup = replace(setup, offer=without_phone_requests(setup.offer))
    autopush = duo.settings.autopush and setup.offer.push and not sms_sent and not passcode_error
    return render(
        request,
        "validate.html",
        status_code=401 if passcode_error else 200,
        title="Verify it's you",
        setup=setup,
        csrf_token=session.csrf_token,
        autopush=autopush,
        activated=True,
        sms_sent=sms_sent,
        pause_notice=pause_notice,
        passcode_error=passcode_error,
        remember_days=await remember_days_for(request, session),
    )


async def _duo_view(request: Request, duo: DuoPushService, session: SessionView) -> SetupView:
    """What Duo offers this session now: its validation, or its set-up while enrolling (a
    user whose phone Duo knows already approves a first push on the validation page)."""
    purpose, _ = await gateway_of(request).gate.purpose_for(session, DUO_PUSH)
    if purpose == "validate":
        return await duo.validation(session, client_of(request))
    return await duo.setup(session, client_of(request))


@router.get("/duo/activation")
async def activation_status(request: Request) -> Response:
    session = await session_in(request, *VERIFYING)
    duo = await duo_of(request)
    try:
        status = await duo.activation_status(session, client_of(request))
    except FailOpen:
        return JSONResponse({"status": "error", "message": "Duo cannot be reached."}, 503)
    return JSONResponse({"status": status.value})


async def _start_out_of_band(request: Request, factor: DuoFactor) -> Response:
    """Sends a push or has Duo call; the page then polls the challenge the same way."""
    session = await session_in(request, *VERIFYING)
    factors = DuoFactorService(await duo_of(request))
    device = str((await request.form()).get("device") or "auto")
    try:
        if factor is DuoFactor.PHONE:
            challenge = await factors.call(session, client_of(request), device)
        else:
            challenge = await factors.send_push(session, client_of(request), device)
    except FailOpen:
        completion = await fail_open(request, session)
        response = JSONResponse({"state": "allow", "redirect": landing_after(completion)})
        set_session_cookie(request, response, completion.token)
        return response
    message = CALLING if factor is DuoFactor.PHONE else "Push sent. Approve it in Duo Mobile."
    return JSONResponse({"challenge": challenge, "state": "pending", "message": message})


@router.post("/duo/push")
async def send_push(request: Request) -> Response:
    return await _start_out_of_band(request, DuoFactor.PUSH)


@router.post("/duo/call")
async def start_call(request: Request) -> Response:
    return await _start_out_of_band(request, DuoFactor.PHONE)


@router.post("/duo/sms")
async def text_passcodes(request: Request) -> Response:
    """A plain form: Duo texts passcodes, then the validation page asks for one."""
    session = await session_in(request, *VERIFYING)
    factors = DuoFactorService(await duo_of(request))
    device = str((await request.form()).get("device") or "auto")
    try:
        await factors.text_passcodes(session, client_of(request), device)
    except FailOpen:
        return completed(request, await fail_open(request, session))
    return RedirectResponse("/2fa/validate?sms=sent", status_code=303)


@router.get("/duo/push/{challenge}")
async def push_status(
    request: Request, challenge: str, device: str | None = None, remember: str = ""
) -> Response:
    session = await session_in(request, *VERIFYING)
    duo = await duo_of(request)
    try:
        result = await duo.poll(session, challenge, client_of(request), device)
    except FailOpen:
        completion = await fail_open(request, session)
        result_state, message = "allow", "Duo cannot be reached; signed in (failmode safe)."
        response = JSONResponse(
            {"state": result_state, "message": message, "redirect": landing_after(completion)}
        )
        set_session_cookie(request, response, completion.token)
        return response
    body: dict[str, str] = {"state": result.state.value, "message": result.message}
    response = JSONResponse(body)
    if result.completion is not None:
        body["redirect"] = landing_after(result.completion)
        response = JSONResponse(body)
        set_session_cookie(request, response, result.completion.token)
        await remember_device_if_asked(request, response, session, result.completion, remember)
    return response


@router.post("/duo/passcode")
async def passcode(request: Request) -> Response:
    session = await session_in(request, *VERIFYING)
    duo = await duo_of(request)
    form = await request.form()
    try:
        completion = await DuoFactorService(duo).verify_passcode(
            session, str(form.get("passcode", "")), client_of(request)
        )
    except FailOpen:
        completion = await fail_open(request, session)
    except FactorNotAllowed:
        raise  # a page of its own: there is no passcode field to show the error under
    except SecondFactorError as exc:
        setup = await _duo_view(request, duo, session)
        return await _validation_page(request, session, setup, passcode_error=exc.message)
    response = completed(request, completion)
    await remember_device_if_asked(request, response, session, completion, form.get("remember"))
    return response

"""Pages of the local second-factor methods: set one up (`/2fa/m/{code}/enrol`), verify with
one (`/2fa/m/{code}`), "Use another method" (`/2fa/use`), and the steps after a second factor
(`/2fa/after`: the backup-method step, then where the user was going).

Every method renders `methods/<code>/enrol.html` and `methods/<code>/verify.html`; decisions
live in `SecondFactorService` and `MethodGate`.
"""

from __future__ import annotations

import io
from typing import Any

import segno
from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from twofa.methods.registry import DUO_PUSH
from twofa.services.second_factor.gate import StepUpRequired
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.second_factor.pipeline import Started
from twofa.services.state.sessions import Level, SessionView
from twofa.web.context import (
    client_of,
    gateway_of,
    session_at,
    session_in,
)
from twofa.web.duo_pages import (
    completed,
    method_url,
    remember_device_if_asked,
)
from twofa.web.templating import render

router = APIRouter(prefix="/2fa")
VERIFYING = (Level.AWAITING_SECOND_FACTOR, Level.SIGNED_IN)
BACKUP_CODES = "backup_codes"


def qr_svg(text: str) -> str:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=4, border=2, xmldecl=False)
    return out.getvalue().decode("utf-8")


PAGE_FIELDS = frozenset({"csrf_token", "challenge", "remember"})  # not the method's business


def _response_fields(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k not in PAGE_FIELDS}


async def _page(
    request: Request,
    session: SessionView,
    code: str,
    template: str,
    started: Started,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    """A method's set-up or verify page."""
    gateway = gateway_of(request)
    method = gateway.second_factor.registry.local(code)
    show = dict(started.show)
    offer_remember = template == "verify" and session.level is Level.AWAITING_SECOND_FACTOR
    return render(
        request,
        f"methods/{code}/{template}.html",
        status_code=status_code,
        title=method.title,
        method=method,
        show=show,
        qr_svg=qr_svg(show["uri"]) if isinstance(show.get("uri"), str) else None,
        challenge_id=started.challenge_id,
        csrf_token=session.csrf_token,
        step_up=session.level is Level.SIGNED_IN,
        remember_days=await gateway.devices.days() if offer_remember else 0,
        note=started.note,
        **extra,
    )


@router.get("/m/{code}")
async def verify_page(request: Request, code: str) -> Response:
    session = await session_in(request, *VERIFYING)
    started = await gateway_of(request).second_factor.start(session, code, client_of(request))
    return await _page(request, session, code, "verify", started)


@router.post("/m/{code}")
async def verify_answer(request: Request, code: str) -> Response:
    session = await session_in(request, *VERIFYING)
    factors = gateway_of(request).second_factor
    form = await request.form()
    challenge_id = str(form.get("challenge", ""))
    try:
        completion = await factors.verify(
            session, code, challenge_id, _response_fields(form), client_of(request)
        )
    except SecondFactorError as exc:
        again = await factors.reopen(session, code, challenge_id, "validate")
        if again is None:
            raise
        return await _page(request, session, code, "verify", again, 401, error=exc.message)
    response = completed(request, completion)
    if code == BACKUP_CODES and session.user_id is not None:
        mine = await gateway_of(request).my_methods.overview(session.user_id)
        if mine.low_on_backup_codes:  # say so before the user goes on
            response.headers["location"] = "/2fa/after?codes_low=1"
    await remember_device_if_asked(request, response, session, completion, form.get("remember"))
    return response


@router.get("/m/{code}/enrol")
async def enrol_page(request: Request, code: str) -> Response:
    session = await session_in(request, *VERIFYING)
    started = await gateway_of(request).second_factor.begin_enrolment(
        session, code, client_of(request)
    )
    return await _page(request, session, code, "enrol", started)


@router.post("/m/{code}/enrol/begin")
async def enrol_with_details(request: Request, code: str) -> Response:
    """The method's details form (the address codes go to), then its set-up as usual."""
    session = await session_in(request, *VERIFYING)
    fields = _response_fields(await request.form())
    started = await gateway_of(request).second_factor.begin_enrolment(
        session, code, client_of(request), entered=fields
    )
    if started.error:
        return await _page(request, session, code, "enrol", started, 400, error=started.error)
    return await _page(request, session, code, "enrol", started)


@router.post("/m/{code}/enrol")
async def enrol_answer(request: Request, code: str) -> Response:
    session = await session_in(request, *VERIFYING)
    factors = gateway_of(request).second_factor
    form = await request.form()
    challenge_id = str(form.get("challenge", ""))
    try:
        enrolled = await factors.finish_enrolment(
            session, code, challenge_id, _response_fields(form), client_of(request)
        )
    except StepUpRequired:
        raise  # web/errors.py sends the user to verify, then back to the set-up page
    except SecondFactorError as exc:
        again = await factors.reopen(session, code, challenge_id, "enrol")
        if again is None:
            raise
        return await _page(request, session, code, "enrol", again, 400, error=exc.message)
    if enrolled.completion is not None:
        return completed(request, enrolled.completion)
    return RedirectResponse("/2fa/after", status_code=303)


@router.get("/m/{code}/enrol/{challenge}/codes.txt")
async def download_draft(request: Request, code: str, challenge: str) -> Response:
    """Backup codes as a text file, while their enrolment draft is open (shown once)."""
    session = await session_in(request, *VERIFYING)
    secret = await gateway_of(request).second_factor.draft_secret(session, code, challenge)
    if secret is None:
        raise SecondFactorError("Nothing to download for this method.")
    response = PlainTextResponse(secret + "\n")
    response.headers["Content-Disposition"] = 'attachment; filename="twofa-backup-codes.txt"'
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/use")
async def use_another_method(request: Request, step_up: int = 0) -> Response:
    session = await session_in(request, *VERIFYING)
    gateway = gateway_of(request)
    assert session.user_id is not None
    codes = await gateway.gate.usable_methods(session.user_id)
    choices = [(code, _title(request, code), method_url(code)) for code in codes]
    return render(
        request,
        "methods/use_another.html",
        title="Use another method",
        choices=choices,
        step_up=bool(step_up) or session.level is Level.SIGNED_IN,
    )


def _title(request: Request, code: str) -> str:
    if code == DUO_PUSH:
        return "Duo Push to your phone"
    return gateway_of(request).second_factor.registry.get(code).title


@router.get("/elevate")
async def elevate(request: Request) -> Response:
    """A signed-in user whose next application wants a second factor: verify with one, or
    add one first when they have none."""
    session = await session_at(request, Level.SIGNED_IN)
    assert session.user_id is not None
    if await gateway_of(request).gate.usable_methods(session.user_id):
        return RedirectResponse("/2fa/use?step_up=1", status_code=303)
    return RedirectResponse("/my-2fa?need=second_factor", status_code=303)


@router.get("/after")
async def after_second_factor(request: Request, new: int = 0, codes_low: int = 0) -> Response:
    session = await session_at(request, Level.SIGNED_IN)
    assert session.user_id is not None
    gateway = gateway_of(request)
    step = await gateway.gate.backup_step(session.user_id, just_enrolled=bool(new))
    target = session.next_url  # checked against the allow-list when it was stored
    if step is None and codes_low:
        mine = await gateway.my_methods.overview(session.user_id)
        left = next((c.codes_left for c in mine.credentials if c.codes_left is not None), 0)
        return render(
            request,
            "methods/backup_codes/running_low.html",
            title="Backup codes running low",
            codes_left=left,
            next_url=target,
        )
    if step is None:
        return RedirectResponse(target, status_code=303)
    choices = [(code, _title(request, code), f"/2fa/m/{code}/enrol") for code in step.methods]
    return render(
        request,
        "methods/backup_step.html",
        title="Set up a backup method",
        choices=choices,
        required=step.required,
        next_url=target,
    )

"""The one place where errors become responses. The user sees one plain message per kind of
failure; the log gets the cause."""

from __future__ import annotations

import logging
import urllib.parse

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from twofa.methods.registry import UnknownMethod
from twofa.services.access.rules import UnknownAccessRule
from twofa.services.duo.push_fatigue import DailyCapReached, PushesPaused
from twofa.services.second_factor.outcomes import DuoDown, DuoRefused, SecondFactorError
from twofa.services.second_factor.pipeline import DeliveryFailed
from twofa.web.admin.guard import AdminOnly
from twofa.web.context import CsrfError, SignInRequired
from twofa.web.templating import render

log = logging.getLogger("twofa.web")
SESSION_EXPIRED = "Your sign-in has expired. Please sign in again."


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def problem(
    request: Request, status: int, message: str, *, other_methods: bool = False, **extra: str
) -> Response:
    """`other_methods` adds the "Use another method" way out (a method that cannot work right
    now, like e-mail with the mail server down, must not strand the user)."""
    if wants_json(request):
        return JSONResponse({"state": "error", "message": message, **extra}, status_code=status)
    return render(
        request,
        "error.html",
        status_code=status,
        title="Sign-in problem",
        message=message,
        other_methods=other_methods,
    )


async def sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    target = "/login?" + urllib.parse.urlencode({"next": exc.next_url})
    if wants_json(request):
        return JSONResponse({"state": "error", "message": SESSION_EXPIRED, "redirect": target}, 401)
    return RedirectResponse(target, status_code=303)


async def csrf_failed(request: Request, exc: Exception) -> Response:
    log.warning("CSRF check failed for %s %s", request.method, request.url.path)
    return problem(
        request,
        403,
        "This form has expired or did not come from this site. Reload the page and try again.",
    )


async def admin_only(request: Request, exc: Exception) -> Response:
    return problem(request, 403, "This page is for administrators only. The attempt was logged.")


async def second_factor_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SecondFactorError)
    unavailable = isinstance(exc, (DeliveryFailed, DuoDown, DuoRefused))
    # the user's other methods may still work: say so with a way to them
    elsewhere = unavailable or isinstance(exc, (PushesPaused, DailyCapReached))
    return problem(request, 503 if unavailable else 400, exc.message, other_methods=elsewhere)


async def unknown_method(request: Request, exc: Exception) -> Response:
    return problem(request, 404, "There is no such sign-in method on this server.")


async def unknown_access_rule(request: Request, exc: Exception) -> Response:
    return problem(request, 404, f"{exc}: another admin may have deleted it. Reload the page.")


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(request, 500, "Something went wrong on our side. Please try again.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(CsrfError, csrf_failed)
    app.add_exception_handler(AdminOnly, admin_only)
    app.add_exception_handler(SecondFactorError, second_factor_refused)
    app.add_exception_handler(UnknownMethod, unknown_method)
    app.add_exception_handler(UnknownAccessRule, unknown_access_rule)
    app.add_exception_handler(Exception, unexpected)

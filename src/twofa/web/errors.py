"""The one place where errors become responses. The user sees one plain message per kind of
failure; the log gets the cause. twofa's own errors are answered by their category, from
`CATEGORY_ANSWERS`; only a class with behaviour of its own (a redirect to sign in, the CSRF
refusal) has a handler of its own."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Final

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from twofa.domain.redirects import HOME
from twofa.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Refused,
    SessionExpired,
    TwofaError,
    Unavailable,
    category_of,
)
from twofa.services.second_factor.gate import SecondFactorNeeded, StepUpRequired
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.web import unavailable
from twofa.web.context import CsrfError, SignInRequired, current_session, gateway_of
from twofa.web.templating import render
from twofa.web.unavailable import database_away

log = logging.getLogger("twofa.web")
CONSOLE: Final = "/admin"
# The status of each error category, and what its page says when the error carries no words
# written for users (`TwofaError.user_message`).
CATEGORY_ANSWERS: Final[Mapping[type[TwofaError], tuple[int, str]]] = {
    NotFound: (404, "What you asked for does not exist. Reload the page and try again."),
    Conflict: (409, "This was changed at the same time. Reload the page and try again."),
    Invalid: (400, "Something you entered cannot be used. Check it and try again."),
    Refused: (400, "This cannot be done."),
    Forbidden: (403, "You are not allowed to do this."),
    Unavailable: (503, "This is not available right now. Please try again later."),
    SessionExpired: (401, SessionExpired.default_message),
}


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
        body = {"state": "error", "message": SessionExpired.default_message, "redirect": target}
        return JSONResponse(body, 401)
    return RedirectResponse(target, status_code=303)


async def step_up_required(request: Request, exc: Exception) -> Response:
    """A page that needs a second factor (or a recent one): the user verifies, then comes
    back to the page (a change is submitted again from it: its form is not kept)."""
    assert isinstance(exc, StepUpRequired)
    target = "/2fa/elevate" if isinstance(exc, SecondFactorNeeded) else "/2fa/use?step_up=1"
    session = await current_session(request)
    if session is not None:
        back = exc.return_to or return_path(request)
        await gateway_of(request).sessions.set_next_url(session, back)
    if wants_json(request):
        return JSONResponse({"state": "error", "message": exc.message, "redirect": target}, 403)
    return RedirectResponse(target, status_code=303)


def return_path(request: Request) -> str:
    """Where to come back to: this page, or for a form the page it was sent from (its
    Referer, when it is this gateway's own page)."""
    if request.method in ("GET", "HEAD"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    referer = urllib.parse.urlsplit(request.headers.get("referer", ""))
    same_site = referer.netloc == request.headers.get("host", "") and referer.netloc != ""
    if same_site and referer.path.startswith("/") and not referer.path.startswith("//"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return CONSOLE if request.url.path.startswith(CONSOLE + "/") else HOME


async def csrf_failed(request: Request, exc: Exception) -> Response:
    log.warning("CSRF check failed for %s %s", request.method, request.url.path)
    return problem(
        request,
        403,
        "This form has expired or did not come from this site. Reload the page and try again.",
    )


async def by_category(request: Request, exc: Exception) -> Response:
    """Every other error twofa raises on purpose: its category's status, with its own words
    when they are written for users, else the category's plain message and the cause logged."""
    assert isinstance(exc, TwofaError)
    category = category_of(exc)
    if category is None:
        return await unexpected(request, exc)
    status, plain = CATEGORY_ANSWERS[category]
    message = exc.user_message
    if message is None:
        log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    other_methods = isinstance(exc, SecondFactorError) and exc.other_methods_may_work
    return problem(request, status, message or plain, other_methods=other_methods)


async def database_error(request: Request, exc: Exception) -> Response:
    """The database's own errors: a 503 while it cannot be reached, else a bug (500)."""
    if not database_away(exc):
        return await unexpected(request, exc)
    log.warning("the database cannot be reached (%s %s): %s", request.method, request.url.path, exc)
    response = problem(request, 503, unavailable.MESSAGE)
    response.headers["Retry-After"] = unavailable.RETRY_AFTER_S
    return response


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(request, 500, "Something went wrong on our side. Please try again.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(CsrfError, csrf_failed)
    app.add_exception_handler(StepUpRequired, step_up_required)
    for database_failure in unavailable.DATABASE_ERRORS:
        app.add_exception_handler(database_failure, database_error)
    app.add_exception_handler(TwofaError, by_category)
    app.add_exception_handler(Exception, unexpected)

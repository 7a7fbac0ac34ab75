"""Assembles the simulator's ASGI app: the signed Auth API, the control plane and the phone page.

Errors are mapped here and only here: `DuoFailure` becomes Duo's FAIL envelope, a control-plane
error becomes `{"error": …}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from twofa.simulator import auth_api, control
from twofa.simulator.control import ControlError
from twofa.simulator.errors import DuoFailure, not_found
from twofa.simulator.state import SimulatorSettings, SimulatorState

PHONE_PAGE = resources.files("twofa.simulator").joinpath("static/phone.html").read_text("utf-8")
PORTAL_PAGE = """<!doctype html><meta charset="utf-8">
<title>Duo simulator · enrolment portal</title>
<p>This is the bundled Duo simulator. Users enrol through twofa's own Duo Push set-up page,
and the simulated phone at <a href="/_sim/phone">/_sim/phone</a> scans nothing: paste the
activation code there instead.</p>"""


async def duo_failure(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DuoFailure)
    return JSONResponse(exc.envelope(), status_code=exc.http_status)


async def control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ControlError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/auth/"):
        failure = not_found() if exc.status_code == 404 else DuoFailure(40501, "Method not allowed")
        return JSONResponse(failure.envelope(), status_code=failure.http_status)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def phone_page(request: Request) -> Response:
    return HTMLResponse(PHONE_PAGE)


async def portal_page(request: Request) -> Response:
    return HTMLResponse(PORTAL_PAGE)


async def index(request: Request) -> Response:
    return RedirectResponse("/_sim/phone")


def create_simulator_app(
    settings: SimulatorSettings, clock: Callable[[], float] = time.time
) -> Starlette:
    routes = [
        *auth_api.routes(),
        *control.routes(),
        Route("/_sim/phone", phone_page, methods=["GET"]),
        Route("/portal", portal_page, methods=["GET"]),
        Route("/", index, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            DuoFailure: duo_failure,
            ControlError: control_error,
            HTTPException: http_error,
        },
    )
    app.state.simulator = SimulatorState(settings, clock)
    return app

"""Jinja2 pages: one renderer that adds what every page shows (demo banner, product name)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from twofa.web.context import gateway_of

TEMPLATES = Jinja2Templates(directory=str(resources.files("twofa.web").joinpath("templates")))
# The templates ship with the package: no stat() of every template file on every page.
TEMPLATES.env.auto_reload = False


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    settings = gateway_of(request).settings
    context.setdefault("title", "Sign in")
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {"demo": settings.is_demo, "app_name": settings.duo.application_name, **context},
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response

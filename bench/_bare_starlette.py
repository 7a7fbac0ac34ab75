"""The floor for bench/forward_auth.py: a Starlette app with one route returning 200, served
by uvicorn like twofa (uvloop, httptools, one worker). Nothing twofa can do is faster."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", ok)])

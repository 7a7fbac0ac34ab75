"""A stand-in for the application twofa protects: it shows what reached it (path, the
identity headers), and a transport that sends every host name to 127.0.0.1, so tests can use
real-looking names (`app.example.test`) without DNS."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

IDENTITY_VARIABLES = {
    "HTTP_REMOTE_USER",
    "HTTP_REMOTE_NAME",
    "HTTP_REMOTE_EMAIL",
    "HTTP_REMOTE_GROUPS",
}


def aliases(request: Request) -> list[str]:
    """Headers a CGI or WSGI backend would read as an identity header (it upper-cases the
    name and turns every character but letters and digits into `_`) that are not the
    dash-form name the proxy manages: what a client might smuggle past forward-auth."""
    found = []
    for raw_name, _ in request.headers.raw:
        name = raw_name.decode("latin-1")
        variable = "HTTP_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        if variable in IDENTITY_VARIABLES and re.search(r"[^A-Za-z0-9-]", name):
            found.append(name)
    return found


async def echo(request: Request) -> Response:
    identity = {
        name: request.headers.get(name)
        for name in ("remote-user", "remote-name", "remote-email", "remote-groups")
    }
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
    seen = {
        # every line of each, as the app's framework would join them
        "cookie": "; ".join(request.headers.getlist("cookie")),
        "x-forwarded-for": ", ".join(request.headers.getlist("x-forwarded-for")),
    }
    return JSONResponse(
        {
            "app": "protected",
            "path": request.url.path,
            **identity,
            **seen,
            "aliases": aliases(request),
        },
        headers={"x-body-bytes": str(received), "x-query": request.url.query},
    )


async def two_cookies(request: Request) -> Response:
    response = PlainTextResponse("cookies")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


async def big_download(request: Request) -> Response:
    size = int(request.query_params.get("bytes", "1048576"))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(size // 65536):
            yield b"x" * 65536

    return StreamingResponse(chunks(), media_type="application/octet-stream")


def protected_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/cookies", two_cookies),
            Route("/download", big_download),
            Route("/{path:path}", echo, methods=["GET", "POST", "PUT"]),
        ]
    )


class LoopbackTransport(httpx.AsyncBaseTransport):
    """Connects to 127.0.0.1 whatever the URL's host; the Host header keeps the name."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # A copy: the client reads cookies against the original request's host.
        loopback = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(loopback)

    async def aclose(self) -> None:
        await self._inner.aclose()

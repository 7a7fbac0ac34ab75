"""The gateway's ASGI app: pages, their scripts and styles, and the error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofa import __version__
from twofa.clock import Clock
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.web import (
    admin,
    api,
    errors,
    factors,
    forward_auth,
    my_factors,
    pages,
    second_factor,
)

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class SecurityHeaders:
    """Adds the security headers to every response. A plain ASGI middleware: the
    decorator-style one costs a task and a queue per request, too much for forward-auth."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self._headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._app(scope, receive, send_with_headers)


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """The app starts its `Gateway` in the serving event loop (database pools and HTTP
    connections belong to that loop) and closes it on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await Gateway.start(settings, clock=clock)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="twofa", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    static = resources.files("twofa.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(pages.router)
    app.include_router(second_factor.router)
    app.include_router(factors.router)
    app.include_router(my_factors.router)
    app.include_router(admin.router)
    app.include_router(api.router)
    errors.install(app)
    # The hot path skips the router and FastAPI's per-request machinery: the proxy calls it
    # before every request to every protected app. Security headers still wrap it.
    app.add_middleware(forward_auth.FastRoutes)
    app.add_middleware(SecurityHeaders)
    return app

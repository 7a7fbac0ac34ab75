"""The gateway's ASGI app: pages, their scripts and styles, and the error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import Response

from twofa import __version__
from twofa.clock import Clock
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.web import admin, api, errors, factors, my_factors, pages, second_factor

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


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

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app

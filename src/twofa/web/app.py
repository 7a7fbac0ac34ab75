"""The gateway's ASGI app: pages, their scripts and styles, the error mapping and the CSRF check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from twofa import __version__
from twofa.clock import Clock
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.web import (
    admin,
    api,
    duo_pages,
    errors,
    forward_auth,
    method_pages,
    my_methods,
    oidc,
    pages,
    saml,
)
from twofa.web.csrf import CsrfMiddleware
from twofa.web.security_headers import SecurityHeaders, security_headers


class GatewayApp(FastAPI):
    """The FastAPI app with the forward-auth check and the health route answered before
    FastAPI's own middlewares and router: proxies call the check before every request to
    every protected app, so it gets no per-request machinery it does not need."""

    # `create_app` sets the routes its settings call for (forward-auth measured or not).
    fast_routes: Mapping[str, forward_auth.FastHandler] = forward_auth.FAST_ROUTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.fast_routes.get(scope["path"])
            if handler is not None:
                await forward_auth.serve_fast_route(handler, self.state.gateway, scope, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    after_start: Callable[[], None] | None = None,
) -> FastAPI:
    """The app starts its `Gateway` in the serving event loop (database pools and HTTP
    connections belong to that loop) and closes it on shutdown; `after_start` runs once it
    has started (a served process tunes its collector there)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = await Gateway.start(settings, clock=clock)
        app.state.gateway = gateway
        if after_start is not None:
            after_start()
        try:
            yield
        finally:
            await gateway.close()

    app = GatewayApp(
        title="twofa", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.fast_routes = forward_auth.fast_routes(measured=settings.metrics.enabled)
    static = resources.files("twofa.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.include_router(pages.router)
    app.include_router(duo_pages.router)
    app.include_router(method_pages.router)
    app.include_router(my_methods.router)
    app.include_router(admin.router)
    app.include_router(api.router)
    app.include_router(oidc.router)  # twofa as an OpenID Connect provider
    app.include_router(saml.router)  # twofa as a SAML 2.0 identity provider
    errors.install(app)
    app.add_middleware(CsrfMiddleware)  # every unsafe request, before any route
    # outermost: a CSRF refusal carries the headers too
    app.add_middleware(SecurityHeaders, headers=security_headers(settings))
    return app

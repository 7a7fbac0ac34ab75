"""The REST API under /api/v1: every console action for scripts and tools, behind bearer API
tokens, described by the OpenAPI document at /api/v1/openapi.json. The last route catches
every other /api/v1 path, so even a wrong path or method gets the API's JSON error shape."""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from twofa.web.api import (
    access_rules,
    applications,
    audit,
    groups,
    method_settings,
    settings,
    status,
    tokens,
    users,
)
from twofa.web.api.errors import ApiRoute, error_response
from twofa.web.api.openapi import build_document, no_such_route

router = APIRouter(prefix="/api/v1", route_class=ApiRoute)
for module in (
    users,
    groups,
    settings,
    method_settings,
    access_rules,
    applications,
    audit,
    tokens,
    status,
):
    router.include_router(module.router)

ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@cache
def openapi_document() -> dict[str, Any]:
    """Built once, on first request: the routes are fixed when the module is imported."""
    return build_document(router.routes)


@router.get("/openapi.json", include_in_schema=False)
async def serve_openapi_document() -> JSONResponse:
    return JSONResponse(openapi_document())


@router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def no_such_api_route(request: Request) -> Response:
    return error_response(no_such_route(openapi_document(), request.method, request.url.path))

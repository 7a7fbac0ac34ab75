"""Every answer the API gives on failure has one JSON shape,
`{"error": {"code", "message", "fields"}}`, whatever went wrong: bad input, an unknown name, a
refused setting, an unknown path or method, or a bug. The mapping lives here, applied by the
API's own route class, so /api paths never fall through to the HTML error pages. twofa's own
errors are answered by their category (`CATEGORY_ANSWERS`), never by their message."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
from twofa.web import unavailable
from twofa.web.unavailable import database_away

log = logging.getLogger("twofa.api")

STATUS_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    503: "unavailable",
}
# The status and `code` of each error category. "invalid" is a request to fix; "rejected" is a
# well-formed one twofa will not carry out (settings that fail their checks).
CATEGORY_ANSWERS: Final[Mapping[type[TwofaError], tuple[int, str]]] = {
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    Invalid: (422, "invalid"),
    Refused: (400, "rejected"),
    Forbidden: (403, "forbidden"),
    Unavailable: (503, "unavailable"),
    SessionExpired: (401, "unauthorized"),
}
# The service's field names where the API names the field differently.
API_FIELD_NAMES: Final = {"skey": "secret_key"}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, snake_case: what a program branches on.")
    message: str = Field(description="For people; may change between versions.")
    fields: dict[str, str] = Field(
        default_factory=dict, description="What is wrong with each field of the request."
    )


class ErrorBody(BaseModel):
    """The body of every API error response."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all with `ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": STATUS_CODES[status].replace("_", " ")}
        for status in statuses
    }


class ApiProblem(Exception):
    """Raised by API code to answer with an error directly."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


def error_response(problem: ApiProblem) -> JSONResponse:
    detail = ErrorDetail(code=problem.code, message=problem.message, fields=problem.fields)
    body = ErrorBody(error=detail)
    return JSONResponse(body.model_dump(), status_code=problem.status, headers=problem.headers)


def not_found(message: str) -> ApiProblem:
    return ApiProblem(404, "not_found", message)


def category_problem(exc: TwofaError) -> ApiProblem | None:
    """The answer for one of twofa's own errors, from its category; None for one outside every
    category (a family base raised by mistake), which is a bug."""
    category = category_of(exc)
    if category is None:
        return None
    status, code = CATEGORY_ANSWERS[category]
    fields = {API_FIELD_NAMES.get(name, name): why for name, why in exc.fields.items()}
    return ApiProblem(status, code, str(exc), fields=fields)


def validation_fields(errors: Sequence[Any]) -> dict[str, str]:
    """Field name to problem, from pydantic's errors; the input itself is never echoed, as it
    may be a password or a secret key."""
    fields: dict[str, str] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        name = ".".join(location[1:]) or (location[0] if location else "request")
        fields.setdefault(API_FIELD_NAMES.get(name, name), str(error.get("msg", "invalid")))
    return fields


def problem_for(exc: Exception) -> ApiProblem | None:
    """The answer for an exception the API expects; None for a bug."""
    if isinstance(exc, ApiProblem):
        return exc
    if isinstance(exc, RequestValidationError):
        fields = validation_fields(exc.errors())
        return ApiProblem(422, "invalid", "the request is not valid", fields=fields)
    if isinstance(exc, HTTPException):
        code = STATUS_CODES.get(exc.status_code, "http_error")
        return ApiProblem(exc.status_code, code, str(exc.detail), headers=exc.headers)
    if isinstance(exc, TwofaError):
        return category_problem(exc)
    if database_away(exc):
        log.warning("the database cannot be reached: %s", exc)
        retry = {"Retry-After": unavailable.RETRY_AFTER_S}
        return ApiProblem(503, "unavailable", unavailable.MESSAGE, headers=retry)
    return None


class ApiRoute(APIRoute):
    """Turns whatever an API route raises (validation included) into the one error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_with_api_errors(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                problem = problem_for(exc)
                if problem is None:  # a bug: the log gets the cause, the caller a plain 500
                    log.exception("unexpected error on %s %s", request.method, request.url.path)
                    problem = ApiProblem(500, "internal", "something went wrong on our side")
                return error_response(problem)

        return handle_with_api_errors

"""Every answer the API gives on failure has one JSON shape,
`{"error": {"code", "message", "fields"}}`, whatever went wrong: bad input, an unknown name, a
refused setting, an unknown path or method, or a bug. The mapping lives here, applied by the
API's own route class, so /api paths never fall through to the HTML error pages."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from twofa.domain.account_input import AccountError
from twofa.errors import TwofaError
from twofa.services.access.rules import UnknownAccessRule
from twofa.services.admin.api_tokens import (
    ApiTokenNameTaken,
    InvalidApiTokenRequest,
    UnknownApiToken,
)
from twofa.services.settings.console import SettingsRejected

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


_UNKNOWN_NAME = re.compile(r"^no (user|group) ")


def account_problem(exc: AccountError) -> ApiProblem:
    """AccountError is one class for every refusal, so its message tells them apart; the API
    tests pin each of these mappings."""
    message = str(exc)
    if _UNKNOWN_NAME.match(message):
        return ApiProblem(404, "not_found", message)
    if "already exists" in message:
        return ApiProblem(409, "conflict", message)
    return ApiProblem(422, "invalid", message)


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
    if isinstance(exc, SettingsRejected):
        fields = {API_FIELD_NAMES.get(name, name): why for name, why in exc.problems.items()}
        return ApiProblem(400, "rejected", "the settings were not saved", fields=fields)
    if isinstance(exc, AccountError):
        return account_problem(exc)
    if isinstance(exc, UnknownApiToken | UnknownAccessRule):
        return ApiProblem(404, "not_found", str(exc))
    if isinstance(exc, ApiTokenNameTaken):
        return ApiProblem(409, "conflict", str(exc), fields={"name": str(exc)})
    if isinstance(exc, InvalidApiTokenRequest):
        return ApiProblem(422, "invalid", str(exc), fields={exc.field: str(exc)})
    if isinstance(exc, TwofaError):
        return ApiProblem(400, "rejected", str(exc))
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

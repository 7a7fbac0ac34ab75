"""The API's OpenAPI document, built from the API routes only (the app's pages are not part of
it), and the answer for paths and methods the API does not have, worked out from that same
document so the two cannot disagree."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from twofa import __version__
from twofa.web.api.errors import ApiProblem

DESCRIPTION: Final = (
    "Every admin console action of twofa. Authenticate with `Authorization: Bearer <token>`; "
    "create the first token with `twofa token create NAME`. Errors are always "
    '`{"error": {"code", "message", "fields"}}`.'
)
_PARAMETER = re.compile(r"\{[^/{}]+\}")


def build_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    return get_openapi(
        title="twofa API", version=__version__, description=DESCRIPTION, routes=routes
    )


def allowed_methods(document: dict[str, Any], path: str) -> list[str]:
    """The methods the API answers on `path`; empty when it has no such path."""
    for template, operations in document["paths"].items():
        if _matches(template, path):
            return sorted(method.upper() for method in operations)
    return []


def _matches(template: str, path: str) -> bool:
    """`/users/{username}` matches `/users/alice`: a parameter stands for one non-empty segment."""
    wanted, given = template.split("/"), path.split("/")
    return len(wanted) == len(given) and all(
        part == segment or (_PARAMETER.fullmatch(part) is not None and segment != "")
        for part, segment in zip(wanted, given, strict=True)
    )


def no_such_route(document: dict[str, Any], method: str, path: str) -> ApiProblem:
    methods = allowed_methods(document, path)
    if methods:
        return ApiProblem(
            405,
            "method_not_allowed",
            f"{method} is not allowed here; use {', '.join(methods)}",
            headers={"Allow": ", ".join(methods)},
        )
    return ApiProblem(404, "not_found", f"the API has no {path}")

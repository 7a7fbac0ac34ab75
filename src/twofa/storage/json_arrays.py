"""Values of many rows aggregated into one JSON array inside a statement, so a read that
needs a row and a list (a session's user and their groups, a user and their methods) is one
statement on both databases. A value may hold any character, so no separator would do."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class JsonArray(FunctionElement[str]):
    """`json_agg(x)` on PostgreSQL, `json_group_array(x)` on SQLite."""

    type = String()
    inherit_cache = True


@compiles(JsonArray, "postgresql")
def _json_agg(element: JsonArray, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg({compiler.process(element.clauses, **kw)})"


@compiles(JsonArray)
def _json_group_array(element: JsonArray, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


def json_array_values(value: object) -> list[Any]:
    """The aggregated values as a list: PostgreSQL's `json_agg` of no rows is NULL, and each
    driver hands the array back as text."""
    if isinstance(value, str):
        decoded = json.loads(value)
        return decoded if isinstance(decoded, list) else []
    return list(value) if isinstance(value, list) else []

"""Field types the API's request models share. Every text the API accepts is free of NUL
characters and lone surrogates, which no database here stores, so such input is a 422 and
never reaches SQL."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

MAX_OFFSET: Final = 1_000_000
MAX_PAGE: Final = 200


def storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ValueError("must not contain lone surrogates")
    return value


def bounded_text(min_length: int, max_length: int, pattern: str | None = None) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)


Text100 = Annotated[str, bounded_text(0, 100), AfterValidator(storable_text)]
Text200 = Annotated[str, bounded_text(0, 200), AfterValidator(storable_text)]
Text300 = Annotated[str, bounded_text(0, 300), AfterValidator(storable_text)]
Email = Annotated[str, bounded_text(0, 320), AfterValidator(storable_text)]
Name150 = Annotated[str, bounded_text(1, 150), AfterValidator(storable_text)]
NewUsername = Annotated[str, bounded_text(1, 150, r"^\S+$"), AfterValidator(storable_text)]
Password = Annotated[str, bounded_text(1, 1024), AfterValidator(storable_text)]

UsernamePath = Annotated[Name150, Path(description="The user's login name.")]
GroupPath = Annotated[Name150, Path(description="The group's name.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items to return at most.")]


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class SwitchIn(RequestModel):
    enabled: bool

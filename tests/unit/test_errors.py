"""The error tree: every error class twofa defines is under exactly one category, so an edge
can answer it from its category alone, and the sign-in-expired sentence is written once."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import twofa
from twofa.domain.account_input import (
    AccountConflict,
    AccountError,
    ImportProblem,
    ImportRejected,
    InvalidAccountInput,
    UnknownAccount,
)
from twofa.errors import (
    CATEGORIES,
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
from twofa.services.second_factor import gate
from twofa.services.second_factor.outcomes import DuoDown, SecondFactorError
from twofa.services.second_factor.pipeline import DeliveryFailed

SOURCE = Path(twofa.__file__).parent
# Alembic's scripts run only inside Alembic; they define no errors.
NOT_IMPORTABLE = ("twofa.storage.migrations",)
# Classes another change owns while it lands, not yet under their category. Strict, so the day
# they move this list has to shrink. (web/context.py's CsrfError and SignInRequired have moved,
# under Forbidden and SessionExpired.)
AWAITING_THEIR_CATEGORY: set[str] = set()


def every_twofa_module_imported() -> None:
    for module in pkgutil.walk_packages(twofa.__path__, "twofa."):
        if not module.name.startswith(NOT_IMPORTABLE):
            importlib.import_module(module.name)


def subclasses(cls: type[TwofaError]) -> Iterator[type[TwofaError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def error_classes() -> list[type[TwofaError]]:
    every_twofa_module_imported()
    found = {cls for cls in subclasses(TwofaError) if cls.__module__.startswith("twofa.")}
    return sorted(found - set(CATEGORIES), key=qualified)


def error_classes_to_check() -> list[object]:
    awaiting = pytest.mark.xfail(strict=True, reason="web/context.py is another change's file")
    return [
        pytest.param(cls, id=qualified(cls), marks=[awaiting])
        if qualified(cls) in AWAITING_THEIR_CATEGORY
        else pytest.param(cls, id=qualified(cls))
        for cls in error_classes()
    ]


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def most_specific_categories(cls: type[TwofaError]) -> set[type[TwofaError]]:
    """The categories `cls` is under, less those that are only the parent of another one
    (an `Unavailable` error is a `Refused` one too)."""
    under = {category for category in CATEGORIES if issubclass(cls, category)}
    return {c for c in under if not any(o is not c and issubclass(o, c) for o in under)}


def constructed_in_source(name: str) -> list[str]:
    """Lines of twofa's source that build an instance of the class called `name`."""
    call = re.compile(rf"(?<![\w.]){re.escape(name)}\(")
    return [
        f"{path.relative_to(SOURCE)}: {line.strip()}"
        for path in SOURCE.rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if call.search(line) and not line.lstrip().startswith("class ")
    ]


def test_the_walk_finds_errors_in_every_layer() -> None:
    modules = {cls.__module__.split(".")[1] for cls in error_classes()}
    expected = {"services", "domain", "methods", "directories", "storage", "security", "web"}
    assert modules >= expected | {"cli", "config", "errors"}


def test_categories_form_one_tree_under_twofa_error() -> None:
    assert all(issubclass(category, TwofaError) for category in CATEGORIES)
    assert {c for c in CATEGORIES if c.__bases__ == (TwofaError,)} == {
        NotFound,
        Conflict,
        Invalid,
        Refused,
        SessionExpired,
    }
    assert Forbidden.__bases__ == (Refused,)
    assert Unavailable.__bases__ == (Refused,)


@pytest.mark.parametrize("cls", error_classes_to_check())
def test_every_error_class_is_under_exactly_one_category(cls: type[TwofaError]) -> None:
    categories = most_specific_categories(cls)
    if not categories:  # a family: its members name their categories
        assert cls.__subclasses__(), f"{qualified(cls)} is under no category"
        assert not constructed_in_source(cls.__name__), "a family base is never raised itself"
        assert all(len(most_specific_categories(sub)) == 1 for sub in subclasses(cls))
    else:
        assert len(categories) == 1, f"{qualified(cls)} is under {categories}"


def test_the_category_is_the_most_specific_one() -> None:
    assert category_of(DuoDown("Duo cannot be reached")) is Unavailable
    assert category_of(DeliveryFailed("the mail server is down")) is Unavailable
    assert category_of(SecondFactorError("That passcode is not valid.")) is Refused
    assert category_of(UnknownAccount("no user 'ghost'")) is NotFound


def test_a_family_is_still_caught_whole() -> None:
    """Callers catch `SecondFactorError` and `AccountError`; the categories must not change
    what those catch."""
    assert isinstance(DuoDown("down"), SecondFactorError)
    assert isinstance(DeliveryFailed("down"), SecondFactorError)
    for member in (UnknownAccount("x"), AccountConflict("x"), InvalidAccountInput("x")):
        assert isinstance(member, AccountError)
    assert isinstance(ImportRejected([ImportProblem(0, "bad")]), InvalidAccountInput)


def test_invalid_carries_its_fields_and_others_have_none() -> None:
    assert Invalid("bad", {"name": "too long"}).fields == {"name": "too long"}
    assert Invalid("bad").fields == {}
    assert NotFound("gone").fields == {}
    assert NotFound("no user 'bob'").user_message is None  # for the admin and the log


def test_the_sign_in_expired_sentence_is_written_once() -> None:
    sentence = "Your sign-in has expired. Please sign in again."
    assert SessionExpired().args == (sentence,)
    assert gate.SIGNED_OUT_MESSAGE is SessionExpired.default_message
    written = [
        path.relative_to(SOURCE)
        for path in SOURCE.rglob("*.py")
        if "sign-in has expired" in path.read_text(encoding="utf-8")
    ]
    assert written == [Path("errors.py")]

"""The two web edges answer twofa's errors by category, each from its one table: a page (or
the pages' JSON) and the API's error body, with the same status for the same kind of failure
wherever both answer it, and never a decision taken on an error's message."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from twofa.directories.base import DirectoryUnavailable
from twofa.domain.account_input import (
    AccountConflict,
    AccountError,
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
from twofa.methods.registry import UnknownMethod
from twofa.services.access.rules import UnknownAccessRule
from twofa.services.admin.api_tokens import ApiTokenNameTaken, InvalidApiTokenRequest
from twofa.services.duo.push_fatigue import PushesPaused
from twofa.services.second_factor.outcomes import DuoDown, SecondFactorError
from twofa.services.settings.console import SettingsRejected
from twofa.web import errors as pages
from twofa.web.admin.guard import AdminOnly
from twofa.web.api import errors as api

OTHER_METHODS = 'href="/2fa/use"'
# One error of each category, the status a page answers with and the API's status and code.
REPRESENTATIVES: list[tuple[TwofaError, int, tuple[int, str]]] = [
    (UnknownMethod("fax"), 404, (404, "not_found")),
    (AccountConflict("user 'bob' already exists"), 409, (409, "conflict")),
    (InvalidApiTokenRequest("days", "a token lives 1 to 365 days"), 400, (422, "invalid")),
    (SecondFactorError("That passcode is not valid."), 400, (400, "rejected")),
    (AdminOnly("the console is for administrators"), 403, (403, "forbidden")),
    (DuoDown("Duo cannot be reached right now."), 503, (503, "unavailable")),
    (SessionExpired(), 401, (401, "unauthorized")),
]


def app_raising(error: Exception) -> httpx.AsyncClient:
    app = FastAPI()
    pages.install(app)
    app.state.gateway = SimpleNamespace(
        settings=SimpleNamespace(is_demo=False, duo=SimpleNamespace(application_name="twofa"))
    )

    @app.get("/raise")
    async def raise_it() -> None:
        raise error

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://twofa")


async def page_for(error: Exception, *, as_json: bool = False) -> httpx.Response:
    headers = {"accept": "application/json"} if as_json else {}
    async with app_raising(error) as client:
        return await client.get("/raise", headers=headers)


def test_each_edge_has_one_answer_per_category() -> None:
    assert set(pages.CATEGORY_ANSWERS) == set(CATEGORIES)
    assert set(api.CATEGORY_ANSWERS) == set(CATEGORIES)
    assert {category_of(error) for error, _, _ in REPRESENTATIVES} == set(CATEGORIES)


@pytest.mark.parametrize(
    ("error", "page_status", "api_answer"),
    REPRESENTATIVES,
    ids=[type(error).__name__ for error, _, _ in REPRESENTATIVES],
)
async def test_a_representative_of_each_category_gets_its_status_at_both_edges(
    error: TwofaError, page_status: int, api_answer: tuple[int, str]
) -> None:
    assert (await page_for(error)).status_code == page_status
    assert (await page_for(error, as_json=True)).status_code == page_status
    problem = api.problem_for(error)
    assert problem is not None
    assert (problem.status, problem.code) == api_answer


@pytest.mark.parametrize(
    "category", [NotFound, Conflict, Invalid, Refused, Forbidden, Unavailable, SessionExpired]
)
async def test_a_bare_category_is_answered_from_the_tables(category: type[TwofaError]) -> None:
    error = category("for the log only: ldap://10.0.0.5")
    answer = await page_for(error, as_json=True)
    status, plain = pages.CATEGORY_ANSWERS[category]
    assert (answer.status_code, answer.json()["message"]) == (status, plain)
    problem = api.problem_for(error)
    assert problem is not None
    assert (problem.status, problem.code) == api.CATEGORY_ANSWERS[category]


async def test_a_message_meant_for_the_log_never_reaches_the_page() -> None:
    answer = await page_for(DirectoryUnavailable("ldap://10.0.0.5:636: bind refused"))
    assert answer.status_code == 503
    assert "10.0.0.5" not in answer.text
    assert "not available right now" in answer.text


async def test_pages_keep_the_words_written_for_users() -> None:
    assert "no such sign-in method" in (await page_for(UnknownMethod("fax"))).text
    assert "administrators only" in (await page_for(AdminOnly("console"))).text
    rule_gone = await page_for(UnknownAccessRule(7), as_json=True)
    assert rule_gone.json()["message"] == (
        "no console access rule with id 7: another admin may have deleted it. Reload the page."
    )


async def test_a_method_that_cannot_work_now_offers_the_other_methods() -> None:
    down = await page_for(DuoDown("Duo cannot be reached right now."))
    assert (down.status_code, OTHER_METHODS in down.text) == (503, True)
    until = datetime(2026, 1, 1, tzinfo=UTC)
    paused = await page_for(PushesPaused("Pushes are paused.", until))
    assert (paused.status_code, OTHER_METHODS in paused.text) == (400, True)
    wrong = await page_for(SecondFactorError("That passcode is not valid."))
    assert (wrong.status_code, OTHER_METHODS in wrong.text) == (400, False)


async def test_a_family_base_raised_by_mistake_is_a_bug_at_both_edges() -> None:
    assert (await page_for(AccountError("raised bare"))).status_code == 500
    assert api.problem_for(AccountError("raised bare")) is None


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnknownAccount("no user 'ghost'"), 404, "not_found"),
        (UnknownAccount("no group 'ghost'"), 404, "not_found"),
        (AccountConflict("group 'ops' already exists"), 409, "conflict"),
        (
            InvalidAccountInput("invalid username 'a b': 1-150 characters, no spaces"),
            422,
            "invalid",
        ),
        # the words that used to decide the answer, on the wrong class: the class decides
        (InvalidAccountInput("no user 'ghost' already exists"), 422, "invalid"),
    ],
)
def test_account_errors_are_answered_by_class_not_by_message(
    error: AccountError, status: int, code: str
) -> None:
    problem = api.problem_for(error)
    assert problem is not None
    assert (problem.status, problem.code, problem.message) == (status, code, str(error))


def test_the_api_names_the_fields_of_an_error_its_way() -> None:
    rejected = api.problem_for(SettingsRejected({"skey": "Duo refused these keys"}))
    assert rejected is not None
    assert (rejected.status, rejected.code) == (400, "rejected")
    assert rejected.fields == {"secret_key": "Duo refused these keys"}
    taken = api.problem_for(ApiTokenNameTaken("an active token is already named 'deploy'"))
    assert taken is not None
    assert taken.fields == {"name": "an active token is already named 'deploy'"}
    too_long = api.problem_for(InvalidApiTokenRequest("days", "a token lives 1 to 365 days"))
    assert too_long is not None
    assert too_long.fields == {"days": "a token lives 1 to 365 days"}

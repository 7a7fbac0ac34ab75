"""Security questions over real HTTP: set up as the backup step after the authenticator app,
signing in with two of them (case and spacing forgiven, both needed, one message whatever was
wrong), a lock-out of their own (three wrong answers an hour), and the admin's pool page
(admin-only, CSRF, audited, its changes offered to the next user who sets questions up)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.authenticator_security_questions import (
    answer_for,
    enrolment_form,
    questions_on_enrol_page,
    questions_on_verify_page,
    verification_form,
)
from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, running_gateway, sign_in
from tests.support.totp_flow import challenge_from, sign_out
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.methods.security_questions import DEFAULT_QUESTIONS
from twofa.services.settings.two_factor import BackupPolicy

WRONG = "Those answers didn't work. Check them and try again."
ENROL = "/2fa/m/security_questions/enrol"
VERIFY = "/2fa/m/security_questions"
POOL = "/admin/settings/security-questions"
Site = tuple[httpx.AsyncClient, Settings]


async def allow_app_and_questions(settings: Settings) -> None:
    await allow_methods(
        settings,
        ("totp",),
        first_method="totp",
        backup=BackupPolicy.OPTIONAL,
        backup_methods=("security_questions",),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Site]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with (
        factory as url,
        running_gateway(url, simulator) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await allow_app_and_questions(settings)
        yield client, settings


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        console = await start_console(stack, tmp_path, simulator)
        await allow_app_and_questions(console.settings)
        yield console


async def enrol_app(client: httpx.AsyncClient) -> str:
    """Alice's first sign-in with the authenticator app; the backup step offers questions."""
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    page = await client.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    answer = await client.post(
        "/2fa/m/totp/enrol",
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "code": code_at(secret),
        },
    )
    assert answer.headers["location"] == "/2fa/after?new=1"
    assert f'href="{ENROL}"' in (await client.get("/2fa/after?new=1")).text
    return secret


async def post_enrolment(client: httpx.AsyncClient, **changes: str) -> httpx.Response:
    page = await client.get(ENROL)
    assert page.status_code == 200, page.text
    pool, count = questions_on_enrol_page(page.text)
    form = {
        "csrf_token": csrf_from(page.text),
        "challenge": challenge_from(page.text),
        **enrolment_form(pool, count),
        **changes,
    }
    return await client.post(ENROL, data=form)


async def enrol_questions(client: httpx.AsyncClient) -> dict[str, str]:
    """Sets up security questions; returns the answers given, by question."""
    page = await client.get(ENROL)
    pool, count = questions_on_enrol_page(page.text)
    answer = await post_enrolment(client)
    assert answer.status_code == 303, answer.text
    return {question: answer_for(question) for question in pool[:count]}


async def answer_questions(
    client: httpx.AsyncClient, answers: dict[str, str], **changes: str
) -> tuple[list[str], httpx.Response]:
    """Opens the verify page, answers what it asks; returns the questions asked and the reply."""
    page = await client.get(VERIFY)
    assert page.status_code == 200, page.text
    asked = questions_on_verify_page(page.text)
    form = {
        "csrf_token": csrf_from(page.text),
        "challenge": challenge_from(page.text),
        **verification_form(asked, answers),
        **changes,
    }
    return asked, await client.post(VERIFY, data=form)


async def fresh_sign_in(client: httpx.AsyncClient) -> None:
    await sign_out(client)
    client.cookies.clear()
    await sign_in(client, "alice")


async def test_answers_set_up_then_two_of_them_sign_in(site: Site) -> None:
    client, _ = site
    await enrol_app(client)
    answers = await enrol_questions(client)
    assert list(answers) == list(DEFAULT_QUESTIONS[:3])  # the built-in pool, N = 3

    await fresh_sign_in(client)
    asked, reply = await answer_questions(client, answers)
    assert len(asked) == 2
    assert len(set(asked)) == 2
    assert set(asked) <= set(answers)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/2fa/after"
    assert (await client.get("/")).status_code == 200


async def test_answers_are_case_and_spacing_insensitive(site: Site) -> None:
    client, _ = site
    await enrol_app(client)
    answers = await enrol_questions(client)
    shouted = {q: "  " + a.upper().replace(" ", "   ") + "\t" for q, a in answers.items()}

    await fresh_sign_in(client)
    _, reply = await answer_questions(client, shouted)
    assert reply.status_code == 303


async def test_one_wrong_answer_refuses_with_one_message_and_asks_the_same_again(
    site: Site,
) -> None:
    client, _ = site
    await enrol_app(client)
    answers = await enrol_questions(client)
    await fresh_sign_in(client)

    asked, reply = await answer_questions(client, answers, answer_2="not it")
    assert reply.status_code == 401
    assert WRONG in unescape(reply.text)
    assert questions_on_verify_page(reply.text) == asked  # no fishing for easier questions
    _, both_wrong = await answer_questions(client, answers, answer_1="no", answer_2="no")
    assert WRONG in unescape(both_wrong.text)  # the same words whichever one was wrong
    assert 'href="/2fa/use"' in both_wrong.text
    assert (await client.get("/")).status_code != 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"question_2": DEFAULT_QUESTIONS[0]}, "Choose 3 different questions."),
        ({"answer_3": " a "}, "Answer question 3 with at least 2 characters."),
        ({"question_1": "What is your password?"}, "Choose question 1 from the list."),
    ],
)
async def test_enrolment_forms_to_correct_are_shown_again(
    site: Site, change: dict[str, str], message: str
) -> None:
    client, _ = site
    await enrol_app(client)

    refused = await post_enrolment(client, **change)
    assert refused.status_code == 400
    assert message in unescape(refused.text)
    assert questions_on_enrol_page(refused.text)[1] == 3
    assert (await post_enrolment(client)).status_code == 303  # a corrected form goes through


async def test_three_wrong_answers_lock_questions_for_an_hour_but_not_the_app(site: Site) -> None:
    client, _ = site
    secret = await enrol_app(client)
    answers = await enrol_questions(client)
    await fresh_sign_in(client)
    for _ in range(3):
        _, reply = await answer_questions(client, answers, answer_1="wrong")
        assert reply.status_code == 401

    locked = await client.get(VERIFY)
    assert locked.status_code == 400
    assert "Too many failed attempts with this method. Try again in an hour." in locked.text
    page = await client.get("/2fa/m/totp")
    app = await client.post(
        "/2fa/m/totp",
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "code": code_at(secret, +1),
        },
    )
    assert app.status_code == 303


# ---- the admin's pool -------------------------------------------------------------------


async def post_pool(console: Console, action: str, **form: str) -> httpx.Response:
    page = await console.client.get(POOL)
    return await console.client.post(
        f"{POOL}/{action}", data={**form, "csrf_token": csrf_from(page.text)}
    )


async def test_the_pool_page_shows_the_built_in_pool_until_changed(console: Console) -> None:
    page = await console.client.get(POOL)
    assert page.status_code == 200
    for question in DEFAULT_QUESTIONS:
        assert question in unescape(page.text)
    assert "This is the built-in pool" in page.text
    assert field_value(page.text, "answers_required") == "3"


async def test_admin_changes_are_saved_audited_and_offered_to_users(console: Console) -> None:
    added = await post_pool(console, "add", question="  Who was your   first boss? ")
    assert added.status_code == 303
    assert "Question added." in (await console.client.get(added.headers["location"])).text
    removed = await post_pool(console, "remove", question=DEFAULT_QUESTIONS[0])
    assert removed.status_code == 303
    counted = await post_pool(console, "count", answers_required="2")
    assert counted.status_code == 303

    page = (await console.client.get(POOL)).text
    assert "Who was your first boss?" in page
    assert DEFAULT_QUESTIONS[0] not in unescape(page)
    assert field_value(page, "answers_required") == "2"
    events = await console.audit("settings_security_questions")
    assert [e.username for e in events] == ["admin"] * 3
    assert events[-1].detail["before"]["answers_required"] == 3
    assert events[-1].detail["after"]["answers_required"] == 2
    assert events[0].detail["after"]["questions"][-1] == "Who was your first boss?"

    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as alice:
        await enrol_app(alice)
        pool, count = questions_on_enrol_page((await alice.get(ENROL)).text)
    assert count == 2
    assert pool == [*DEFAULT_QUESTIONS[1:], "Who was your first boss?"]


@pytest.mark.parametrize(
    ("action", "form", "field", "problem"),
    [
        ("count", {"answers_required": "6"}, "answers_required", "between 1 and 5"),
        ("count", {"answers_required": "0"}, "answers_required", "between 1 and 5"),
        ("count", {"answers_required": "two"}, "answers_required", "a whole number"),
        ("add", {"question": DEFAULT_QUESTIONS[2].upper()}, "question", "already in the pool"),
        ("add", {"question": "Why?"}, "question", "between 5 and 200 characters"),
        ("remove", {"question": "Not in the pool?"}, "question", "not in the pool"),
    ],
)
async def test_impossible_changes_are_refused_and_nothing_is_saved(
    console: Console, action: str, form: dict[str, str], field: str, problem: str
) -> None:
    answer = await post_pool(console, action, **form)
    assert answer.status_code == 400
    assert problem in field_problem(answer.text, field)
    assert await console.audit("settings_security_questions") == []


async def test_the_pool_cannot_shrink_below_the_answers_required(console: Console) -> None:
    for question in DEFAULT_QUESTIONS[:5]:
        assert (await post_pool(console, "remove", question=question)).status_code == 303

    refused = await post_pool(console, "remove", question=DEFAULT_QUESTIONS[5])
    assert refused.status_code == 400
    assert "lower the number of answers first" in field_problem(refused.text, "question")
    too_many = await post_pool(console, "count", answers_required="4")
    assert "at most the 3 questions in the pool" in field_problem(too_many.text, "answers_required")


async def test_the_pool_page_is_for_admins_only(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as anonymous:
        assert (await anonymous.get(POOL)).status_code == 303
        assert (
            await anonymous.post(f"{POOL}/count", data={"answers_required": "1"})
        ).status_code in (303, 403)
    async with console.signed_in("bob", "bob-password-1") as bob:
        assert (await bob.get(POOL)).status_code == 403
        home = await bob.get("/")
        forged = await bob.post(
            f"{POOL}/count", data={"answers_required": "1", "csrf_token": csrf_from(home.text)}
        )
        assert forged.status_code == 403
    assert await console.audit("settings_security_questions") == []


async def test_a_change_without_the_csrf_token_is_refused(console: Console) -> None:
    answer = await console.client.post(f"{POOL}/count", data={"answers_required": "1"})
    assert answer.status_code == 403
    assert await console.audit("settings_security_questions") == []

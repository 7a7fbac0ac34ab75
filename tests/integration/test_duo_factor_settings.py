"""The admin's choice of Duo factors over real HTTP: checkboxes on the console's Advanced
Settings page and `allowed_factors` in the REST API, saved only when workable, and deciding
what users are offered at their next sign-in."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import Api, duo_body, error_of, started_api
from tests.support.console import ADVANCED, Console, field_problem, start_console
from tests.support.databases import sqlite_database
from twofa.config import DuoFactor

ALICE_PASSWORD = "alice-password-1"


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


@pytest.fixture
async def api(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with sqlite_database(tmp_path) as url, started_api(url, simulator) as running:
        yield running


def with_factors(console: Console, factors: list[str]) -> dict[str, Any]:
    """The Advanced Settings form as the page sends it, with these boxes ticked."""
    return {**console.duo_form(), "allowed_factors_shown": "1", "allowed_factors": factors}


def ticked(page: str) -> set[str]:
    return set(re.findall(r'name="allowed_factors" value="(\w+)" checked', page))


async def validation_page_once_reloaded(alice: httpx.AsyncClient, wanted: str) -> str:
    """Each node rereads the console settings at most once a second: ask until it has."""
    for _ in range(100):
        page = (await alice.get("/2fa/validate")).text
        if wanted in page:
            return page
        await asyncio.sleep(0.1)
    return page


async def test_push_and_passcodes_are_ticked_by_default(console: Console) -> None:
    page = (await console.client.get(ADVANCED)).text

    assert ticked(page) == {"push", "passcode"}
    assert "Phone call (uses Duo telephony credits)" in page
    assert "Passcodes by SMS (uses Duo telephony credits)" in page


async def test_ticking_phone_call_saves_it_and_users_are_then_offered_a_call(
    console: Console,
) -> None:
    console.simulator.add_user("alice")

    answer = await console.post(ADVANCED, with_factors(console, ["push", "phone"]))

    assert answer.status_code == 303, answer.text
    saved = await console.saved_duo()
    assert saved is not None
    assert saved.allowed_factors == (DuoFactor.PUSH, DuoFactor.PHONE)
    assert ticked((await console.client.get(ADVANCED)).text) == {"push", "phone"}
    [event] = await console.audit("settings_duo")
    assert event.detail["after"]["allowed_factors"] == ["push", "phone"]
    async with console.signed_in("alice", ALICE_PASSWORD) as alice:
        offered = await validation_page_once_reloaded(alice, "Call Me")
    assert "Call Me" in offered
    assert 'id="passcode"' not in offered  # passcodes were unticked


async def test_no_factor_or_only_paid_ones_is_refused_under_the_checkboxes(
    console: Console,
) -> None:
    for factors in ([], ["phone", "sms"]):
        answer = await console.post(ADVANCED, with_factors(console, factors))

        assert answer.status_code == 400
        assert field_problem(answer.text, "allowed_factors") != ""
        assert ticked(answer.text) == set(factors)  # the form comes back as typed
        assert await console.saved_duo() is None


async def test_a_form_without_the_checkboxes_keeps_the_factors(console: Console) -> None:
    """Older scripts post the form without the boxes; that is not "untick them all"."""
    answer = await console.post(ADVANCED, console.duo_form())

    assert answer.status_code == 303
    saved = await console.saved_duo()
    assert saved is not None
    assert saved.allowed_factors == (DuoFactor.PUSH, DuoFactor.PASSCODE)


async def test_api_reads_and_writes_allowed_factors(api: Api, simulator: RunningSimulator) -> None:
    before = (await api.http.get("/settings/duo")).json()
    assert before["allowed_factors"] == ["push", "passcode"]

    saved = await api.http.put(
        "/settings/duo", json=duo_body(simulator, allowed_factors=["sms", "push", "phone"])
    )

    assert saved.status_code == 200, saved.text
    assert saved.json()["allowed_factors"] == ["push", "phone", "sms"]
    assert (await api.http.get("/settings/duo")).json()["allowed_factors"] == [
        "push",
        "phone",
        "sms",
    ]


@pytest.mark.parametrize(
    ("factors", "status", "code"),
    [(["phone"], 400, "rejected"), (["fax"], 422, "invalid"), ([], 422, "invalid")],
)
async def test_api_refuses_unworkable_or_unknown_factors(
    api: Api, simulator: RunningSimulator, factors: list[str], status: int, code: str
) -> None:
    answer = await api.http.put("/settings/duo", json=duo_body(simulator, allowed_factors=factors))

    fields = error_of(answer, status, code)["fields"]
    assert any(name.startswith("allowed_factors") for name in fields), fields
    assert (await api.http.get("/settings/duo")).json()["source"] == "file"

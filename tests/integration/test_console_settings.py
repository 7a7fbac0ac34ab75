"""The console's Advanced Settings over real HTTP: a running gateway on SQLite, the Duo
simulator as the Duo the keys are proven against, admins signed in with their password. Saved
keys must drive the 2FA flow; bad input must save nothing and say why, field by field."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.console import (
    ADMIN_PASSWORDS,
    ADVANCED,
    TWO_FACTOR,
    Console,
    field_problem,
    field_value,
    start_console,
)
from tests.support.gateway import csrf_from
from tests.support.servers import free_port
from twofa.services.settings.two_factor import Enforcement, TwoFactorConfig

WRONG_SKEY = "wrongsecretwrongsecretwrongsecretwrong00"


ConsoleFactory = Callable[..., Awaitable[Console]]


@pytest.fixture
async def console_factory(
    tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[ConsoleFactory]:
    """Starts a console; keyword arguments are `mode` and the settings file's Duo values."""
    async with AsyncExitStack() as stack:

        async def start(mode: str = "dev", admin_method: str | None = None, **duo: Any) -> Console:
            both = TwoFactorConfig(methods=("duo_push", "totp"))
            two_factor = both if admin_method == "totp" else None
            return await start_console(
                stack,
                tmp_path,
                simulator,
                mode,
                two_factor=two_factor,
                admin_method=admin_method,
                **duo,
            )

        yield start


@pytest.fixture
async def console(console_factory: ConsoleFactory) -> Console:
    return await console_factory()


# ---- Advanced Settings: saving Duo keys --------------------------------------------------


async def test_valid_keys_are_saved_and_audited_with_the_secret_redacted(
    console: Console,
) -> None:
    answer = await console.post(ADVANCED, console.duo_form())

    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "Saved. Duo answered: keys are valid." in page
    assert "Secret key: set" in page
    saved = await console.saved_duo()
    assert saved is not None
    assert (saved.ikey, saved.application_name, saved.has_secret) == (
        console.simulator.ikey,
        "Console app",
        True,
    )
    [event] = await console.audit("settings_duo")
    assert (event.outcome, event.username) == ("saved", "admin")
    assert event.detail["after"]["skey_sealed"] == "(set)"
    assert console.simulator.skey not in json.dumps(event.detail)
    assert saved.skey_sealed not in json.dumps(event.detail)


async def test_push_fatigue_settings_are_saved_shown_back_and_in_force(console: Console) -> None:
    page = (await console.client.get(ADVANCED)).text
    assert (field_value(page, "pushes_per_day"), field_value(page, "fraud_pause_minutes")) == (
        "20",
        "60",
    )  # the defaults, from the settings file

    answer = await console.post(
        ADVANCED, console.duo_form(pushes_per_day="7", fraud_pause_minutes="90")
    )

    assert answer.status_code == 303
    page = (await console.client.get(ADVANCED)).text
    assert (field_value(page, "pushes_per_day"), field_value(page, "fraud_pause_minutes")) == (
        "7",
        "90",
    )
    saved = await console.saved_duo()
    assert saved is not None
    assert (saved.pushes_per_day, saved.fraud_pause_minutes) == (7, 90)
    in_force = await console.query(lambda gateway: gateway.console.effective_duo())
    assert (in_force.pushes_per_day, in_force.fraud_pause_minutes) == (7, 90)
    [event] = await console.audit("settings_duo")
    assert (
        event.detail["after"]["pushes_per_day"],
        event.detail["after"]["fraud_pause_minutes"],
    ) == (7, 90)


async def test_wrong_secret_key_is_named_at_its_field_and_the_old_keys_remain(
    console: Console,
) -> None:
    await console.post(ADVANCED, console.duo_form(application_name="First app"))

    answer = await console.post(
        ADVANCED, console.duo_form(skey=WRONG_SKEY, application_name="Second app")
    )

    assert answer.status_code == 400
    assert "secret key is wrong" in field_problem(answer.text, "skey")
    assert field_problem(answer.text, "ikey") == ""
    assert field_value(answer.text, "application_name") == "Second app"  # kept as typed
    assert field_value(answer.text, "skey") == ""
    assert WRONG_SKEY not in answer.text
    saved = await console.saved_duo()
    assert saved is not None
    assert saved.application_name == "First app"
    outcomes = [event.outcome for event in await console.audit("settings_duo")]
    assert outcomes == ["saved", "rejected"]


async def test_unknown_integration_key_is_named_at_its_field(console: Console) -> None:
    answer = await console.post(ADVANCED, console.duo_form(ikey="DIXXXXXXXXXXXXXXXXXX"))

    assert answer.status_code == 400
    assert field_problem(answer.text, "ikey") == "Duo does not know this integration key"
    assert field_value(answer.text, "ikey") == "DIXXXXXXXXXXXXXXXXXX"
    assert await console.saved_duo() is None


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"api_hostname": "http://duo.example.com"}, "api_hostname", "plain http is only"),
        ({"api_hostname": "api-x.duosecurity.com/path"}, "api_hostname", "bare host name"),
        ({"api_hostname": ""}, "api_hostname", "the API hostname is empty"),
        ({"ikey": "DI123"}, "ikey", "an integration key is 20 characters"),
        ({"ikey": ""}, "ikey", "an integration key is 20 characters"),
        ({"skey": "too-short"}, "skey", "a secret key is 40 characters, this one has 9"),
        ({"skey": ""}, "skey", "the secret key is required"),
        ({"pushes_per_minute": "0"}, "pushes_per_minute", "between 1 and 60"),
        ({"pushes_per_minute": "many"}, "pushes_per_minute", "a whole number"),
        ({"pushes_per_day": "0"}, "pushes_per_day", "between 1 and 500"),
        ({"pushes_per_day": "501"}, "pushes_per_day", "between 1 and 500"),
        ({"pushes_per_day": "lots"}, "pushes_per_day", "a whole number"),
        ({"fraud_pause_minutes": "0"}, "fraud_pause_minutes", "between 1 and 10080"),
        ({"fraud_pause_minutes": "10081"}, "fraud_pause_minutes", "between 1 and 10080"),
        ({"fraud_pause_minutes": ""}, "fraud_pause_minutes", "a whole number"),
        ({"push_type": ""}, "push_type", "1 to 100 characters"),
        ({"application_name": "x" * 101}, "application_name", "1 to 100 characters"),
        ({"failmode": "open"}, "failmode", "choose secure or safe"),
    ],
)
async def test_bad_field_is_explained_next_to_it_and_nothing_is_saved(
    console: Console, changes: dict[str, str], field: str, problem: str
) -> None:
    answer = await console.post(ADVANCED, console.duo_form(**changes))

    assert answer.status_code == 400
    assert problem in field_problem(answer.text, field)
    assert "Nothing was saved" in answer.text
    assert await console.saved_duo() is None
    assert await console.audit("settings_duo") == []  # refused before Duo was even asked


async def test_an_unbalanced_bracket_in_the_hostname_is_a_field_problem(console: Console) -> None:
    answer = await console.post(ADVANCED, console.duo_form(api_hostname="http://[::1"))

    assert answer.status_code == 400
    assert field_problem(answer.text, "api_hostname")


async def test_every_empty_field_is_reported_at_once(console: Console) -> None:
    empty = {"ikey": "", "skey": "", "api_hostname": "", "push_type": "", "application_name": ""}

    answer = await console.post(ADVANCED, console.duo_form(**empty))

    for field in empty:
        assert field_problem(answer.text, field), f"no problem shown for {field}"


async def test_unreachable_host_is_named_at_the_hostname(console: Console) -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}"

    answer = await console.post(ADVANCED, console.duo_form(api_hostname=nobody_listens))

    assert answer.status_code == 400
    assert field_problem(answer.text, "api_hostname").startswith("cannot reach 127.0.0.1:")
    assert await console.saved_duo() is None


async def test_secret_key_is_never_rendered_back(console: Console) -> None:
    await console.post(ADVANCED, console.duo_form())
    saved = await console.saved_duo()
    assert saved is not None

    pages = [
        (await console.client.get(ADVANCED)).text,
        (await console.post(f"{ADVANCED}/test", {})).text,
        (await console.post(ADVANCED, console.duo_form(ikey="DI123"))).text,
    ]

    for page in pages:
        assert console.simulator.skey not in page
        assert saved.skey_sealed not in page
        assert field_value(page, "skey") == ""


async def test_an_empty_secret_keeps_the_stored_one(console: Console) -> None:
    await console.post(ADVANCED, console.duo_form())

    answer = await console.post(ADVANCED, console.duo_form(skey="", failmode="safe"))

    assert answer.status_code == 303
    saved = await console.saved_duo()
    assert saved is not None
    assert saved.failmode.value == "safe"
    connection = await console.post(f"{ADVANCED}/test", {})
    assert "Connected: Duo's clock differs by" in connection.text


# ---- Test connection and the bundled simulator ------------------------------------------


async def test_test_connection_reports_duos_clock_for_working_keys(console: Console) -> None:
    await console.post(ADVANCED, console.duo_form())

    answer = await console.post(f"{ADVANCED}/test", {})

    assert answer.status_code == 200
    assert re.search(r"Connected: Duo's clock differs by \d+ s", answer.text)


async def test_test_connection_names_the_problem_with_the_keys_in_force(
    console_factory: ConsoleFactory,
) -> None:
    # The settings file holds a wrong secret: the admin comes in with an authenticator app.
    console = await console_factory(skey=WRONG_SKEY, admin_method="totp")

    answer = await console.post(f"{ADVANCED}/test", {})

    assert "Test failed" in answer.text
    assert "Secret key: Duo refused the signature: the secret key is wrong" in answer.text
    assert "Connected" not in answer.text


async def test_bundled_simulator_button_saves_the_demo_keys(
    console_factory: ConsoleFactory,
) -> None:
    console = await console_factory(mode="demo")
    assert "Use the bundled simulator" in (await console.client.get(ADVANCED)).text

    answer = await console.post(f"{ADVANCED}/simulator", {})

    assert answer.status_code == 303
    saved = await console.saved_duo()
    assert saved is not None
    assert (saved.ikey, saved.api_hostname) == (console.simulator.ikey, console.simulator.base_url)
    assert [e.outcome for e in await console.audit("settings_duo")] == ["saved"]


async def test_bundled_simulator_is_not_offered_outside_the_demo(console: Console) -> None:
    assert "Use the bundled simulator" not in (await console.client.get(ADVANCED)).text

    await console.post(f"{ADVANCED}/simulator", {})

    assert await console.saved_duo() is None


# ---- Who may change settings ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [ADVANCED, f"{ADVANCED}/test", f"{ADVANCED}/simulator", TWO_FACTOR]
)
async def test_a_post_without_csrf_token_is_refused(console: Console, path: str) -> None:
    form = {**console.duo_form(), "enforcement": "everyone"}

    answer = await console.client.post(path, data=form)

    assert answer.status_code == 403
    assert "did not come from this site" in answer.text
    assert await console.saved_duo() is None
    assert (await console.saved_two_factor()).enforcement is Enforcement.SELECTED


@pytest.mark.parametrize(("method", "path"), [("GET", ADVANCED), ("POST", TWO_FACTOR)])
async def test_a_signed_in_user_who_is_not_an_admin_gets_403_and_is_audited(
    console: Console, method: str, path: str
) -> None:
    async with console.signed_in("bob", "bob-password-1") as bob:
        csrf = csrf_from((await bob.get("/")).text)
        if method == "GET":
            answer = await bob.get(path)
        else:
            answer = await bob.post(path, data={"csrf_token": csrf})

    assert answer.status_code == 403
    assert "administrators only" in answer.text
    [denied] = await console.audit("admin_denied")
    assert (denied.username, denied.outcome, denied.detail["path"]) == ("bob", "forbidden", path)


async def test_anonymous_visitor_is_sent_to_sign_in(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.base_url) as anonymous:
        answer = await anonymous.get(TWO_FACTOR)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


# ---- Saved keys drive the 2FA flow ------------------------------------------------------


async def test_keys_saved_in_the_console_replace_wrong_file_keys_for_sign_in(
    console_factory: ConsoleFactory,
) -> None:
    # failmode secure: Duo refuses every call; the admin comes in with an authenticator app
    console = await console_factory(skey=WRONG_SKEY, admin_method="totp")
    async with console.signed_in("alice", "alice-password-1") as alice:
        assert (await alice.get("/2fa/duo/setup")).status_code == 503

        saved = await console.post(ADVANCED, console.duo_form())
        assert saved.status_code == 303

        setup = await _first_answer_other_than(503, lambda: alice.get("/2fa/duo/setup"))
    assert setup.status_code == 200
    assert "Set up Duo Push" in setup.text


async def _first_answer_other_than(
    status: int, request: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Each node rereads the console settings at most once a second: ask until it has."""
    for _ in range(100):
        answer = await request()
        if answer.status_code != status:
            return answer
        await asyncio.sleep(0.1)
    return answer


async def test_two_admins_saving_duo_keys_at_once_both_succeed_and_are_audited(
    console: Console,
) -> None:
    await console.post(ADVANCED, console.duo_form(application_name="Before"))
    async with console.signed_in("admin2", ADMIN_PASSWORDS["admin2"]) as admin2:
        answers = await asyncio.gather(
            console.post(ADVANCED, console.duo_form(application_name="From admin")),
            console.post(ADVANCED, console.duo_form(application_name="From admin2"), admin2),
        )

    assert [answer.status_code for answer in answers] == [303, 303]
    saved = await console.saved_duo()
    assert saved is not None
    assert saved.application_name in ("From admin", "From admin2")  # the last write wins
    events = await console.audit("settings_duo")
    assert sorted(event.username for event in events[1:]) == ["admin", "admin2"]
    assert {event.detail["after"]["application_name"] for event in events[1:]} == {
        "From admin",
        "From admin2",
    }

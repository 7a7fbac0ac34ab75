"""The end-user Duo Push flow over real HTTP: a gateway on loopback, the simulator as Duo."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.gateway import csrf_from, running_gateway, sign_in


@pytest.fixture
async def browser(
    database_url: str, simulator: RunningSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_gateway(database_url, simulator) as (base_url, _settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


async def start_push(client: httpx.AsyncClient, page_url: str) -> str:
    page = await client.get(page_url)
    assert page.status_code == 200, page.text
    answer = await client.post(
        "/2fa/duo/push",
        headers={"X-CSRF-Token": csrf_from(page.text), "Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["challenge"])


async def follow(client: httpx.AsyncClient, challenge: str) -> dict[str, str]:
    for _ in range(10):
        answer = await client.get(
            f"/2fa/duo/push/{challenge}", headers={"Accept": "application/json"}
        )
        body: dict[str, str] = answer.json()
        if body["state"] != "pending":
            return body
    raise AssertionError("push never ended")


async def test_user_without_2fa_signs_in_with_password_alone(browser: httpx.AsyncClient) -> None:
    answer = await sign_in(browser, "bob")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    home = await browser.get("/")
    assert "Bob Builder" in home.text


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    browser: httpx.AsyncClient,
) -> None:
    wrong = await sign_in(browser, "alice", "nope")
    unknown = await sign_in(browser, "mallory", "nope")
    assert wrong.status_code == unknown.status_code == 401
    assert "Invalid username or password." in wrong.text
    assert "Invalid username or password." in unknown.text


async def test_first_login_enrols_in_duo_push_then_later_logins_validate(
    browser: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    answer = await sign_in(browser, "alice")
    assert answer.headers["location"] == "/2fa"
    intro = await browser.get("/2fa")
    assert "Next" in intro.text
    setup = await browser.get("/2fa/duo/setup")
    assert "Send Me Push Notification" in setup.text
    assert "<svg" in setup.text  # the QR code is drawn by twofa
    [enrolment] = simulator.control.get("/_sim/enrollments", params={"username": "alice"}).json()
    assert (await browser.get("/2fa/duo/activation")).json()["status"] == "waiting"
    simulator.control.post("/_sim/activate", json={"activation_code": enrolment["activation_code"]})
    assert (await browser.get("/2fa/duo/activation")).json()["status"] == "success"
    challenge = await start_push(browser, "/2fa/duo/setup")
    [pending] = simulator.pending("alice")
    assert pending["display_username"] == "Alice Liddell"
    assert pending["pushinfo"]["Application"] == "Test app"
    simulator.settle(str(pending["txid"]), "approve")
    result = await follow(browser, challenge)
    assert result["state"] == "allow"
    assert "Alice Liddell" in (await browser.get("/")).text

    logout_page = await browser.get("/")
    await browser.post("/logout", data={"csrf_token": csrf_from(logout_page.text)})
    assert (await browser.get("/")).status_code == 303  # signed out: back to sign-in

    answer = await sign_in(browser, "alice")
    assert (await browser.get("/2fa")).headers["location"] == "/2fa/validate"
    challenge = await start_push(browser, "/2fa/validate")
    [pending] = simulator.pending("alice")
    simulator.settle(str(pending["txid"]), "approve")
    assert (await follow(browser, challenge))["state"] == "allow"


@pytest.mark.parametrize(
    ("action", "state", "words"),
    [
        ("deny", "deny", "denied"),
        ("fraud", "fraud", "fraudulent"),
        ("timeout", "timeout", "expired"),
    ],
)
async def test_unapproved_push_does_not_sign_in(
    browser: httpx.AsyncClient, simulator: RunningSimulator, action: str, state: str, words: str
) -> None:
    simulator.add_user("alice")
    await sign_in(browser, "alice")
    challenge = await start_push(browser, "/2fa/duo/setup")
    [pending] = simulator.pending("alice")
    simulator.settle(str(pending["txid"]), action)
    result = await follow(browser, challenge)
    assert result["state"] == state
    assert words in result["message"]
    assert (await browser.get("/")).status_code == 303
    assert simulator.pending("alice") == []  # nothing was re-sent by itself


async def test_user_with_two_phones_picks_one_and_twofa_remembers_it(
    browser: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    phones = [{"type": "phone", "name": "Work phone"}, {"type": "phone", "name": "Home phone"}]
    created = simulator.add_user("alice", devices=phones)
    home_phone = str(created["devices"][1]["device"])  # type: ignore[index]
    await sign_in(browser, "alice")
    page = await browser.get("/2fa/duo/setup")
    assert "Work phone" in page.text
    assert "Home phone" in page.text
    answer = await browser.post(
        "/2fa/duo/push",
        data={"device": home_phone},
        headers={"X-CSRF-Token": csrf_from(page.text), "Accept": "application/json"},
    )
    challenge = answer.json()["challenge"]
    [pending] = simulator.pending("alice")
    assert pending["device"] == home_phone
    simulator.settle(str(pending["txid"]), "approve")
    status = await browser.get(
        f"/2fa/duo/push/{challenge}",
        params={"device": home_phone},
        headers={"Accept": "application/json"},
    )
    assert status.json()["state"] == "allow"
    logout_page = await browser.get("/")
    await browser.post("/logout", data={"csrf_token": csrf_from(logout_page.text)})
    await sign_in(browser, "alice")
    validate = await browser.get("/2fa/validate")
    assert f'<option value="{home_phone}" selected>' in validate.text

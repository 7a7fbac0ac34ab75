"""Duo's other factors over real HTTP, with the simulator as Duo: a phone call answered (or
denied) on the phone, SMS passcodes read from the simulated phone, Duo Mobile passcodes, and
what the admin allows or the user's device can do deciding what is offered and accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.gateway import csrf_from, running_gateway, sign_in
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow

JSON = {"Accept": "application/json"}
EVERY_FACTOR = ["push", "phone", "sms", "passcode"]
PUSH_AND_PASSCODES_ONLY = [
    {"type": "phone", "name": "Tablet", "capabilities": ["auto", "push", "mobile_otp"]}
]

Browser = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def browser(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Browser]:
    """Starts a gateway whose settings file has these Duo values; yields a client for it."""
    async with AsyncExitStack() as stack:

        async def start(**duo: Any) -> httpx.AsyncClient:
            base_url, settings = await stack.enter_async_context(
                running_gateway(database_url, simulator, autopush=False, **duo)
            )
            client = httpx.AsyncClient(base_url=base_url, timeout=30)
            await stack.enter_async_context(client)
            client.twofa_settings = settings  # type: ignore[attr-defined]
            return client

        yield start


async def audit_events(client: httpx.AsyncClient, prefix: str = "duo_") -> list[tuple[str, str]]:
    settings: Settings = client.twofa_settings  # type: ignore[attr-defined]
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            rows = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).all()
        return [(row.kind, row.outcome) for row in rows if row.kind.startswith(prefix)]
    finally:
        await gateway.close()


async def validation_page(client: httpx.AsyncClient, username: str = "alice") -> str:
    assert (await sign_in(client, username)).status_code == 303
    page = await client.get("/2fa/validate")
    assert page.status_code == 200, page.text
    return page.text


async def start_call(client: httpx.AsyncClient, page: str) -> httpx.Response:
    return await client.post("/2fa/duo/call", headers={**JSON, "X-CSRF-Token": csrf_from(page)})


async def follow(client: httpx.AsyncClient, challenge: str) -> dict[str, str]:
    for _ in range(10):
        answer = await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)
        body: dict[str, str] = answer.json()
        if body["state"] != "pending":
            return body
    raise AssertionError("the call never ended")


async def text_passcodes(client: httpx.AsyncClient, page: str) -> httpx.Response:
    return await client.post("/2fa/duo/sms", data={"csrf_token": csrf_from(page)})


async def type_passcode(client: httpx.AsyncClient, passcode: str) -> httpx.Response:
    page = (await client.get("/2fa/validate")).text
    return await client.post(
        "/2fa/duo/passcode", data={"passcode": passcode, "csrf_token": csrf_from(page)}
    )


async def signed_in(client: httpx.AsyncClient) -> bool:
    return (await client.get("/")).status_code == 200


async def sign_out(client: httpx.AsyncClient) -> None:
    home = await client.get("/")
    await client.post("/logout", data={"csrf_token": csrf_from(home.text)})


def sms_inbox(simulator: RunningSimulator, username: str = "alice") -> list[dict[str, Any]]:
    answer = simulator.control.get(f"/_sim/users/{username}/sms")
    answer.raise_for_status()
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


async def test_phone_call_answered_and_approved_signs_in(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=EVERY_FACTOR)
    created = simulator.add_user("alice")
    phone = created["devices"][0]["device"]  # type: ignore[index]
    page = await validation_page(client)
    assert "Call Me" in page

    answer = await start_call(client, page)

    assert answer.status_code == 200, answer.text
    assert answer.json()["message"].startswith("Calling your phone")
    [ringing] = simulator.pending("alice")
    assert (ringing["factor"], ringing["status"], ringing["device"]) == ("phone", "calling", phone)
    simulator.settle(str(ringing["txid"]), "answer").raise_for_status()
    challenge = answer.json()["challenge"]
    pending = await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)
    assert pending.json() == {"state": "pending", "message": answer.json()["message"]}
    simulator.settle(str(ringing["txid"]), "approve").raise_for_status()
    assert (await follow(client, challenge))["state"] == "allow"
    assert await signed_in(client)
    assert await audit_events(client) == [("duo_phone", "sent"), ("duo_phone", "allow")]


async def test_phone_call_denied_does_not_sign_in_or_call_again(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=EVERY_FACTOR)
    simulator.add_user("alice")
    page = await validation_page(client)
    challenge = (await start_call(client, page)).json()["challenge"]
    [ringing] = simulator.pending("alice")

    simulator.settle(str(ringing["txid"]), "deny").raise_for_status()

    result = await follow(client, challenge)
    assert result == {"state": "deny", "message": "Login request denied."}
    assert not await signed_in(client)
    assert simulator.pending("alice") == []
    assert await audit_events(client) == [("duo_phone", "sent"), ("duo_phone", "deny")]


async def test_sms_passcode_signs_in_once_and_a_reused_one_is_refused(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=["push", "sms"])  # no Duo Mobile passcodes
    simulator.add_user("alice")
    page = await validation_page(client)
    assert "Text Me Passcodes" in page
    assert 'id="passcode"' not in page  # until the text is sent

    sent = await text_passcodes(client, page)

    assert sent.status_code == 303
    after = await client.get(sent.headers["location"])
    assert "We sent passcodes to your phone by SMS" in after.text
    assert 'id="passcode"' in after.text
    assert "Type one of the passcodes Duo sent you by SMS." in after.text
    assert 'data-autopush="false"' in after.text
    [message] = sms_inbox(simulator)
    first, second = message["passcodes"][:2]
    assert (await type_passcode(client, first)).status_code == 303
    assert await signed_in(client)

    await sign_out(client)
    await validation_page(client)
    reused = await type_passcode(client, first)
    assert reused.status_code == 401
    assert "not valid" in reused.text
    assert not await signed_in(client)
    assert (await type_passcode(client, second)).status_code == 303
    events = await audit_events(client)
    assert events[:2] == [("duo_sms", "sent"), ("duo_passcode", "allow")]
    assert ("duo_passcode", "refused") in events


async def test_factors_the_admin_did_not_allow_are_not_offered_and_refused_when_crafted(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser()  # the default: push and passcodes
    simulator.add_user("alice")  # a phone that can do everything
    page = await validation_page(client)
    assert "Send Me Push Notification" in page
    assert 'id="passcode"' in page
    assert "Call Me" not in page
    assert "Text Me Passcodes" not in page

    call = await start_call(client, page)
    sms = await client.post("/2fa/duo/sms", data={"csrf_token": csrf_from(page)})

    assert call.status_code == 400
    assert "does not allow signing in with a phone call" in call.json()["message"]
    assert sms.status_code == 400
    assert "does not allow signing in with passcodes by SMS" in sms.text
    assert simulator.pending("alice") == []
    assert sms_inbox(simulator) == []
    assert await audit_events(client) == [("duo_phone", "not_allowed"), ("duo_sms", "not_allowed")]


async def test_passcodes_not_allowed_means_no_field_and_a_crafted_one_is_refused(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=["push"])
    simulator.add_user("alice")
    passcode = simulator.control.post("/_sim/passcodes", json={"username": "alice"}).json()
    page = await validation_page(client)
    assert 'id="passcode"' not in page

    crafted = await type_passcode(client, passcode["passcode"])

    assert crafted.status_code == 400
    assert "does not allow signing in with a passcode" in crafted.text
    assert not await signed_in(client)
    assert await audit_events(client) == [("duo_passcode", "not_allowed")]


async def test_a_device_that_cannot_be_called_or_texted_is_not_offered_either(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=EVERY_FACTOR)
    simulator.add_user("alice", devices=PUSH_AND_PASSCODES_ONLY)
    page = await validation_page(client)
    assert "Send Me Push Notification" in page
    assert 'id="passcode"' in page
    assert "Call Me" not in page
    assert "Text Me Passcodes" not in page

    crafted = await start_call(client, page)  # Duo itself refuses: no capable device

    assert crafted.status_code == 400
    assert "cannot do that" in crafted.json()["message"]
    assert simulator.pending("alice") == []


async def test_duo_mobile_passcode_still_signs_in_and_says_where_it_comes_from(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser()
    simulator.add_user("alice")
    page = await validation_page(client)
    assert "Open Duo Mobile and tap your account to show a passcode" in page
    passcode = simulator.control.post("/_sim/passcodes", json={"username": "alice"}).json()

    answer = await type_passcode(client, passcode["passcode"])

    assert answer.status_code == 303
    assert await signed_in(client)


async def test_pushes_calls_and_texts_share_the_per_minute_limit(
    browser: Browser, simulator: RunningSimulator
) -> None:
    client = await browser(allowed_factors=EVERY_FACTOR, pushes_per_minute=3)
    simulator.add_user("alice")
    page = await validation_page(client)
    headers = {**JSON, "X-CSRF-Token": csrf_from(page)}
    assert (await client.post("/2fa/duo/push", headers=headers)).status_code == 200
    assert (await start_call(client, page)).status_code == 200
    assert (await text_passcodes(client, page)).status_code == 303

    limited = await start_call(client, page)
    texted_again = await text_passcodes(client, page)

    assert limited.status_code == 400
    assert "Too many calls and messages" in limited.json()["message"]
    assert texted_again.status_code == 400
    assert len(simulator.pending("alice")) == 2
    assert len(sms_inbox(simulator)) == 1
    events = await audit_events(client)
    assert ("duo_phone", "rate_limited") in events
    assert ("duo_sms", "rate_limited") in events

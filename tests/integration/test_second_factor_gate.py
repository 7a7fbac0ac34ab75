"""The second factor cannot be skipped or faked: the attacks of issue 13, each over real HTTP
against the gateway, the Duo simulator, SQLite and PostgreSQL, refused by the one gate
(`services.second_factor.gate.MethodGate`) that every method's routes ask.

The attacker knows alice's password and nothing else: every test signs in with it from a
browser of its own and tries to reach a signed-in session or a new second factor of alice's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_for, current_step, secret_from_page
from tests.support.clocks import SkippableClock
from tests.support.duo_flow import JSON, enrol_with_duo_push, send_push
from tests.support.gateway import (
    csrf_from,
    csrf_token_of,
    running_gateway,
    second_factor_state,
    sign_in,
)
from tests.support.totp_flow import enrol_alice, sign_out, submit_code
from tests.support.two_factor import allow_methods
from twofa.config import Settings
from twofa.services.admin.console_users import ConsoleUsersService
from twofa.services.admin.overview import OverviewService
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow
from twofa.web.context import DEVICE_COOKIE, SESSION_COOKIE

SETTINGS_FOLLOW_S = 1.1  # a running gateway applies the console's settings within a second
Site = tuple[httpx.AsyncClient, httpx.AsyncClient, Settings]


@pytest.fixture
def clock() -> SkippableClock:
    """The running gateways' clock: skipped ahead, their cached settings are read again."""
    return SkippableClock()


@pytest.fixture
async def site_factory(database_url: str, simulator: RunningSimulator, clock: SkippableClock):  # type: ignore[no-untyped-def]
    """Starts the gateway with Duo settings `duo`; yields alice's browser, the attacker's
    browser and the settings."""
    managers: list[Any] = []

    async def start(**duo: Any) -> Site:
        manager = running_gateway(database_url, simulator, clock=clock, **duo)
        base_url, settings = await manager.__aenter__()
        alice = httpx.AsyncClient(base_url=base_url, timeout=30)
        attacker = httpx.AsyncClient(base_url=base_url, timeout=30)
        managers.append((manager, alice, attacker))
        return alice, attacker, settings

    yield start
    for manager, alice, attacker in reversed(managers):
        await alice.aclose()
        await attacker.aclose()
        await manager.__aexit__(None, None, None)


async def alices_state(settings: Settings) -> tuple[list[str], str | None, list[tuple[str, str]]]:
    return await second_factor_state(settings, "alice")


async def audit_of(settings: Settings, kind: str) -> list[tuple[str, dict[str, Any]]]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            rows = await db.scalars(select(AuditRow).where(AuditRow.kind == kind))
            return [(row.outcome, dict(row.detail)) for row in rows]
    finally:
        await gateway.close()


async def is_signed_in(client: httpx.AsyncClient) -> bool:
    return (await client.get("/")).status_code == 200


async def try_every_duo_route(attacker: httpx.AsyncClient) -> list[httpx.Response]:
    """What an attacker with the password asks of Duo: set-up, activation, push, call,
    texted passcodes, a passcode, a poll of a made-up challenge, the validation page; with
    the session's CSRF token, as alice's own page would send them."""
    token = csrf_from((await attacker.get("/2fa/m/totp")).text)
    headers = {**JSON, "X-CSRF-Token": token}
    return [
        await attacker.get("/2fa/duo/setup"),
        await attacker.get("/2fa/duo/activation"),
        await attacker.get("/2fa/validate"),
        await attacker.post("/2fa/duo/push", headers=headers),
        await attacker.post("/2fa/duo/call", headers=headers),
        await attacker.post("/2fa/duo/sms", data={"csrf_token": token}),
        await attacker.post("/2fa/duo/passcode", data={"csrf_token": token, "passcode": "123456"}),
        await attacker.get("/2fa/duo/push/made-up-challenge", headers=JSON),
    ]


@pytest.mark.parametrize("duo_allowed", [False, True], ids=["duo-not-offered", "duo-offered"])
async def test_a_password_alone_cannot_enrol_a_duo_phone_for_a_totp_user(
    site_factory: Any, simulator: RunningSimulator, duo_allowed: bool
) -> None:
    """Attack 1: alice has the authenticator app; with her password, set up Duo Push on the
    attacker's phone and approve the push. Refused whether or not the admin offers Duo."""
    alice, attacker, settings = await site_factory()
    methods = ("totp", "duo_push") if duo_allowed else ("totp",)
    await allow_methods(settings, methods, first_method="totp")
    await enrol_alice(alice)
    simulator.add_user("alice")  # the attacker's phone, as Duo would have it once activated

    before = await alices_state(settings)
    assert (await sign_in(attacker, "alice")).headers["location"] == "/2fa"
    answers = await try_every_duo_route(attacker)

    assert [a.status_code for a in answers if a.status_code < 400] == []
    assert not any("duo://" in a.text for a in answers)
    assert simulator.pending("alice") == []  # no push, no call reached Duo
    assert not await is_signed_in(attacker)
    methods, activation, challenges = await alices_state(settings)
    assert (methods, activation) == (["totp"], None)
    assert [c for c in challenges if c not in before[2]] == [("totp", "validate")]  # its token


async def test_a_password_alone_cannot_replace_a_duo_users_phone(
    site_factory: Any, simulator: RunningSimulator
) -> None:
    """Alice has Duo Push; Duo has since lost her phone (removed in Duo's admin panel). The
    validation page must not turn into a new set-up for whoever has the password."""
    alice, attacker, settings = await site_factory()
    await enrol_with_duo_push(alice, simulator)
    simulator.control.post("/_sim/reset").raise_for_status()  # Duo forgot alice and her phone

    await sign_in(attacker, "alice")
    validation = await attacker.get("/2fa/validate")
    assert validation.status_code == 400
    assert "verified with another method" in validation.text
    setup = await attacker.get("/2fa/duo/setup")
    assert setup.status_code == 400
    assert "duo://" not in setup.text
    assert not await is_signed_in(attacker)
    methods, activation, _ = await alices_state(settings)
    assert (methods, activation) == (["duo_push"], None)


async def test_a_duo_push_never_verifies_a_user_whose_method_was_withdrawn(
    site_factory: Any, simulator: RunningSimulator, clock: SkippableClock
) -> None:
    """Alice set up Duo Push and the authenticator app; the admin then allows only the app.
    Her Duo phone is no way in any more: the push is refused before it reaches Duo."""
    alice, attacker, settings = await site_factory()
    await allow_methods(settings, ("duo_push", "totp"), first_method="duo_push")
    await enrol_with_duo_push(alice, simulator)
    page = await alice.get("/2fa/m/totp/enrol")  # just signed in with Duo: fresh enough
    code = code_for(secret_from_page(page.text), current_step())
    assert (await submit_code(alice, "/2fa/m/totp/enrol", page, code)).status_code == 303
    await allow_methods(settings, ("totp",), first_method="totp")
    clock.skip(SETTINGS_FOLLOW_S)
    await sign_out(alice)

    await sign_in(attacker, "alice")
    pushed = await send_push(attacker, "/2fa/m/totp")
    assert pushed.status_code == 400
    assert "not offered" in pushed.json()["message"]
    assert simulator.pending("alice") == []
    assert not await is_signed_in(attacker)


async def test_not_now_is_no_way_in_for_a_user_who_has_any_method(site_factory: Any) -> None:
    """Attack 2: with a grace period, "Not now" from alice's authenticator-app page signed
    her in on the password alone: grace counted only Duo Push as enrolled."""
    alice, attacker, settings = await site_factory()
    await allow_methods(settings, ("totp",), first_method="totp", grace_postponements=3)
    await enrol_alice(alice)

    await sign_in(attacker, "alice")
    page = await attacker.get("/2fa/m/totp")
    postponed = await attacker.post("/2fa/postpone", data={"csrf_token": csrf_from(page.text)})
    assert postponed.status_code == 400
    assert not await is_signed_in(attacker)
    assert [outcome for outcome, _ in await audit_of(settings, "enrolment")] == ["added"]


async def test_the_console_counts_any_method_as_enrolled(site_factory: Any) -> None:
    """Attack 2's other half: the console said a TOTP-only user had not enrolled yet."""
    alice, _, settings = await site_factory()
    await allow_methods(settings, ("totp",), first_method="totp")
    await enrol_alice(alice)
    gateway = await Gateway.start(settings)
    try:
        users = ConsoleUsersService(gateway.db, gateway.clock, gateway.console, gateway.gate)
        status = await users.status("alice")
        figures = await OverviewService(gateway.db, gateway.clock, gateway.console).users()
    finally:
        await gateway.close()
    assert status is not None
    assert "enrolled: Authenticator app" in status.explanation
    assert (figures.enrolled, figures.pending) == (1, 0)


async def test_a_duo_outage_mints_no_lasting_second_factor(
    site_factory: Any, simulator: RunningSimulator
) -> None:
    """Attack 4: failmode safe, remember-device 30 days, Duo answering 503. The fail-open
    sign-in must leave no device cookie, and it is not a fresh second factor: with Duo back,
    the password signs in to nothing, and the fail-open session cannot change methods."""
    alice, attacker, settings = await site_factory(failmode="safe")
    await allow_methods(
        settings, ("duo_push", "totp"), first_method="duo_push", remember_device_days=30
    )
    await enrol_with_duo_push(alice, simulator)
    await sign_out(alice)

    await sign_in(attacker, "alice")
    validation = await attacker.get("/2fa/validate?sms=sent")  # no autopush in the way
    assert validation.status_code == 200
    simulator.control.post("/_sim/faults", json={"status": 503}).raise_for_status()
    answer = await attacker.post(
        "/2fa/duo/passcode",
        data={"csrf_token": csrf_from(validation.text), "passcode": "123456", "remember": "on"},
    )
    assert answer.status_code == 303  # failmode safe let a Duo user in...
    assert DEVICE_COOKIE not in attacker.cookies  # ...and remembered nothing
    assert await is_signed_in(attacker)
    enrol = await attacker.get("/2fa/m/totp/enrol")  # not fresh: a real factor first
    assert enrol.headers["location"] == "/2fa/use?step_up=1"
    bypassed = await audit_of(settings, "second_factor")
    assert ("bypassed", {"reason": "failmode safe"}) in [
        (outcome, {"reason": detail.get("reason")}) for outcome, detail in bypassed
    ]

    simulator.control.delete("/_sim/faults").raise_for_status()
    await sign_out(attacker)
    assert (await sign_in(attacker, "alice")).headers["location"] == "/2fa"
    assert not await is_signed_in(attacker)
    assert [m for m, _ in (await alices_state(settings))[2] if m == "totp"] == []


async def test_duos_bypass_answer_to_a_passcode_is_no_second_factor(
    site_factory: Any, simulator: RunningSimulator
) -> None:
    """Found by the adversary run: Duo answers any passcode of a user in Duo's bypass status
    with allow/bypass. That answer waives Duo's factor; it must not count as a passed one
    (a remembered device, a fresh factor to replace alice's authenticator app)."""
    alice, attacker, settings = await site_factory()
    await allow_methods(
        settings, ("duo_push", "totp"), first_method="duo_push", remember_device_days=30
    )
    await enrol_with_duo_push(alice, simulator)
    simulator.add_user("alice", preauth="allow")  # Duo's admin put alice in bypass status

    await sign_in(attacker, "alice")
    token = await csrf_token_of(settings, attacker.cookies[SESSION_COOKIE])
    answer = await attacker.post(
        "/2fa/duo/passcode", data={"csrf_token": token, "passcode": "123456", "remember": "on"}
    )
    assert answer.status_code == 303  # let in as a bypass, as Duo's policy says of a Duo user
    assert DEVICE_COOKIE not in attacker.cookies  # ...remembering nothing
    assert await is_signed_in(attacker)
    enrol = await attacker.get("/2fa/m/totp/enrol")  # ...and not fresh: a real factor first
    assert enrol.headers["location"] == "/2fa/use?step_up=1"
    assert "allow" not in [outcome for outcome, _ in await audit_of(settings, "duo_passcode")]
    bypassed = [
        d.get("reason") for o, d in await audit_of(settings, "second_factor") if o == "bypassed"
    ]
    assert bypassed == ["Duo bypass"]


@pytest.mark.parametrize("second", ["totp", "backup_codes"])
async def test_two_sessions_racing_a_first_sign_in_set_up_one_method(
    site_factory: Any, second: str
) -> None:
    """Found by the adversary run: two browsers with the password, both at a first sign-in,
    finishing a set-up at once. Both had passed the gate before either stored anything: both
    were signed in, with two methods, or the second app key silently replacing the first.
    The store now takes the user's row and asks the gate again: one wins, the other is told
    to verify with the method that now exists."""
    alice, attacker, settings = await site_factory()
    await allow_methods(settings, ("totp", "backup_codes"), first_method="totp")
    for browser in (alice, attacker):
        await sign_in(browser, "alice")
    mine = await alice.get("/2fa/m/totp/enrol")
    theirs = await attacker.get(f"/2fa/m/{second}/enrol")
    their_answer: dict[str, str] = {"csrf_token": csrf_from(theirs.text), "saved": "on"}
    their_answer["challenge"] = theirs.text.split('name="challenge" value="')[1].split('"')[0]
    if second == "totp":
        their_answer["code"] = code_for(secret_from_page(theirs.text), current_step())

    answers = await asyncio.gather(
        submit_code(
            alice, "/2fa/m/totp/enrol", mine, code_for(secret_from_page(mine.text), current_step())
        ),
        attacker.post(f"/2fa/m/{second}/enrol", data=their_answer),
    )

    assert sorted(answer.status_code for answer in answers) == [303, 400]
    assert sorted([await is_signed_in(alice), await is_signed_in(attacker)]) == [False, True]
    methods, _, _ = await alices_state(settings)
    assert len(methods) == 1

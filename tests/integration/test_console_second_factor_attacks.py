"""The console as an attacker with an admin's password would try it, over real HTTP on SQLite and
PostgreSQL: a session with no second factor behind it (the office network's skip, Duo failing
open) reaches no console route, and a second factor older than ten minutes changes nothing
until the admin confirms it's them again. Every console route is walked, so a new page cannot
forget the rule (it lives in `MethodGate.may_use_console`, asked by the console's router)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from tests.conftest import RunningSimulator
from tests.integration.test_csrf_every_route import FORM, PARAMETERS, database_state
from tests.integration.test_gate_walks_every_route import app_routes
from tests.support.admin_sign_in import pass_duo_push, sign_in_admin
from tests.support.gateway import csrf_from, csrf_token_of, running_gateway, sign_in
from tests.support.user_management import ADMIN, ADMIN_PASSWORD, add_admin
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users
from twofa.storage.tables import SessionRow
from twofa.web.context import SESSION_COOKIE

pytestmark = pytest.mark.integration
OFFICE = "10.20.30.40"  # a trusted network: a set-up second factor is skipped there
TRUSTED = {"access": {"trusted_networks": ["10.0.0.0/8"]}}
# What a refused request may still write: its session remembers where to come back to, and
# the audit log may note the refusal.
BOOKKEEPING = ("sessions", "audit_events")


@pytest.fixture
async def site(
    database_url: str, simulator: RunningSimulator
) -> AsyncIterator[tuple[str, Settings]]:
    """A gateway with the admin `root`, who has set up Duo Push (signed in once, then out)."""
    async with running_gateway(database_url, simulator, extra=TRUSTED) as (base_url, settings):
        await add_admin(settings)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await sign_in_admin(first, simulator, ADMIN, ADMIN_PASSWORD)
        yield base_url, settings


def console_routes(settings: Settings) -> list[tuple[str, str]]:
    routes = [(m, p) for m, p in app_routes(settings) if p.startswith("/admin")]
    assert len(routes) > 30, "the walk must cover the whole console"
    return routes


def concrete(path: str) -> str:
    for name, value in PARAMETERS.items():
        path = path.replace(f"{{{name}}}", "1" if value.startswith("{") else value)
    assert "{" not in path, f"give the walk a value for {path}"
    return path


async def data_state(settings: Settings) -> dict[str, list[str]]:
    state = await database_state(settings)
    return {table: rows for table, rows in state.items() if table not in BOOKKEEPING}


async def age_second_factor(settings: Settings, username: str, minutes: int) -> None:
    """As if the user's last second factor had been `minutes` ago."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name(username)
            assert user is not None
            earlier = gateway.clock.now() - timedelta(minutes=minutes)
            await db.execute(
                update(SessionRow)
                .where(SessionRow.user_id == user.id, SessionRow.second_factor_at.is_not(None))
                .values(second_factor_at=earlier)
            )
    finally:
        await gateway.close()


async def test_attack_admin_password_from_the_office_network_reaches_no_console_route(
    site: tuple[str, Settings],
) -> None:
    base_url, settings = site
    headers = {"X-Forwarded-For": OFFICE}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as office:
        signed_in = await sign_in(office, ADMIN, ADMIN_PASSWORD)
        assert signed_in.headers["location"] == "/", "the office skips the second factor"
        token = await csrf_token_of(settings, office.cookies[SESSION_COOKIE])
        before = await data_state(settings)

        for method, route in console_routes(settings):
            path = concrete(route)
            if method == "GET":
                answer = await office.get(path)
            else:
                answer = await office.request(method, path, data={**FORM, "csrf_token": token})
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"] == "/2fa/elevate", (method, path)

        assert await data_state(settings) == before
        # where the refusal sends the admin: verify with the method they have
        assert (await office.get("/2fa/elevate")).headers["location"] == "/2fa/use?step_up=1"


async def test_attack_admin_signs_in_while_duo_fails_open_and_opens_the_console(
    database_url: str, simulator: RunningSimulator
) -> None:
    """failmode safe lets a Duo user in on the password while Duo is down: never into the
    console, whose changes would outlive the outage."""
    safe = {"failmode": "safe"}
    async with running_gateway(database_url, simulator, **safe) as (base_url, settings):
        await add_admin(settings)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await sign_in_admin(first, simulator, ADMIN, ADMIN_PASSWORD)
        simulator.control.post("/_sim/faults", json={"status": 503}).raise_for_status()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as during_outage:
            await sign_in(during_outage, ADMIN, ADMIN_PASSWORD)
            let_in = await during_outage.get("/2fa/validate")
            assert let_in.status_code == 303, "failmode safe signs the Duo user in"
            console = await during_outage.get("/admin/settings/advanced")
        simulator.control.delete("/_sim/faults").raise_for_status()
    assert console.status_code == 303
    assert console.headers["location"] == "/2fa/elevate"


async def test_attack_stale_second_factor_changes_every_console_setting(
    site: tuple[str, Settings], simulator: RunningSimulator
) -> None:
    base_url, settings = site
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as admin:
        await sign_in_admin(admin, simulator, ADMIN, ADMIN_PASSWORD)
        await age_second_factor(settings, ADMIN, minutes=11)
        page = await admin.get("/admin/settings/two-factor")
        assert page.status_code == 200, "reading the console needs no fresh second factor"
        token = csrf_from(page.text)
        before = await data_state(settings)

        changes = [(m, p) for m, p in console_routes(settings) if m != "GET"]
        assert len(changes) > 20
        for method, route in changes:
            path = concrete(route)
            answer = await admin.request(method, path, data={**FORM, "csrf_token": token})
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"] == "/2fa/use?step_up=1", (method, path)

        assert await data_state(settings) == before


async def test_a_stale_admin_confirms_with_duo_push_and_comes_back_to_the_page(
    site: tuple[str, Settings], simulator: RunningSimulator
) -> None:
    base_url, settings = site
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as admin:
        await sign_in_admin(admin, simulator, ADMIN, ADMIN_PASSWORD)
        await age_second_factor(settings, ADMIN, minutes=11)
        token = await csrf_token_of(settings, admin.cookies[SESSION_COOKIE])
        form = {"username": "bob", "enabled": "0", "csrf_token": token}
        referer = {"Referer": f"{base_url}/admin/users"}
        refused = await admin.post("/admin/users/account", data=form, headers=referer)
        assert refused.headers["location"] == "/2fa/use?step_up=1"

        await pass_duo_push(admin, simulator, ADMIN)
        back = await admin.get("/2fa/after")
        assert back.headers["location"] == "/admin/users", "back to the page of the change"
        # the step-up rotated the session: the page, loaded again, carries its new token
        form["csrf_token"] = await csrf_token_of(settings, admin.cookies[SESSION_COOKIE])
        done = await admin.post("/admin/users/account", data=form, headers=referer)
        assert done.status_code == 303, done.text
        assert done.headers["location"].startswith("/admin/users")


async def test_a_fresh_admin_changes_without_being_asked_again(
    site: tuple[str, Settings], simulator: RunningSimulator
) -> None:
    base_url, settings = site
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as admin:
        await sign_in_admin(admin, simulator, ADMIN, ADMIN_PASSWORD)
        await age_second_factor(settings, ADMIN, minutes=9)
        token = await csrf_token_of(settings, admin.cookies[SESSION_COOKIE])
        form = {"username": "bob", "enabled": "0", "csrf_token": token}
        answer = await admin.post("/admin/users/account", data=form)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/users")

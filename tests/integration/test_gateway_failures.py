"""Bad input and failure at the gateway: forged cookies, missing CSRF, open redirects, Duo down
or refusing, replayed challenges, a restart in the middle of a push. Real HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.duo_flow import enrol_with_duo_push
from tests.support.gateway import csrf_from, running_gateway, sign_in
from tests.support.totp_flow import sign_out
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow
from twofa.web.context import SESSION_COOKIE

JSON = {"Accept": "application/json"}


@pytest.fixture
async def gateway_factory(database_url: str, simulator: RunningSimulator):  # type: ignore[no-untyped-def]
    """Starts a gateway with extra Duo settings; yields (client, settings)."""
    stack: list[Any] = []

    async def start(**duo: Any) -> httpx.AsyncClient:
        manager = running_gateway(database_url, simulator, **duo)
        base_url, settings = await manager.__aenter__()
        client = httpx.AsyncClient(base_url=base_url, timeout=30)
        stack.append((manager, client))
        client.twofa_settings = settings  # type: ignore[attr-defined]
        return client

    yield start
    for manager, client in reversed(stack):
        await client.aclose()
        await manager.__aexit__(None, None, None)


async def audit_kinds(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    gateway = await Gateway.start(client.twofa_settings)  # type: ignore[attr-defined]
    try:
        async with gateway.db.begin() as db:
            rows = (await db.scalars(select(AuditRow).order_by(AuditRow.id))).all()
        return [(row.kind, row.outcome) for row in rows]
    finally:
        await gateway.close()


async def push(client: httpx.AsyncClient, page: str = "/2fa/duo/setup") -> httpx.Response:
    html = (await client.get(page)).text
    return await client.post("/2fa/duo/push", headers={**JSON, "X-CSRF-Token": csrf_from(html)})


async def test_login_without_csrf_token_is_403(gateway_factory: Any) -> None:
    client = await gateway_factory()
    await client.get("/login")
    answer = await client.post("/login", data={"username": "bob", "password": "bob-password-1"})
    assert answer.status_code == 403
    assert "expired or did not come from this site" in answer.text


async def test_forged_session_cookie_goes_back_to_sign_in(gateway_factory: Any) -> None:
    client = await gateway_factory()
    client.cookies.set(SESSION_COOKIE, "forged-value")
    answer = await client.get("/app")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=%2Fapp")


@pytest.mark.parametrize(
    ("next_url", "landing"),
    [
        ("/app", "/app"),
        ("//evil.example", "/"),
        ("https://evil.example/x", "/"),
        ("javascript:x", "/"),
    ],
)
async def test_redirect_after_sign_in_stays_on_allowed_hosts(
    gateway_factory: Any, next_url: str, landing: str
) -> None:
    client = await gateway_factory()
    page = await client.get("/login", params={"next": next_url})
    answer = await client.post(
        "/login",
        data={"username": "bob", "password": "bob-password-1", "csrf_token": csrf_from(page.text)},
    )
    assert answer.headers["location"] == landing


async def test_session_id_changes_at_each_privilege_change(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory()
    simulator.add_user("alice")
    await client.get("/login")
    anonymous = client.cookies[SESSION_COOKIE]
    await sign_in(client, "alice")
    after_password = client.cookies[SESSION_COOKIE]
    challenge = (await push(client)).json()["challenge"]
    simulator.settle(str(simulator.pending("alice")[0]["txid"]), "approve")
    final = await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)
    assert final.json()["state"] == "allow"
    replay = await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)
    # the challenge belonged to the pending session, not to the signed-in one that replaced it
    assert replay.status_code == 400
    assert "no longer valid" in replay.json()["message"]
    assert len({anonymous, after_password, client.cookies[SESSION_COOKIE]}) == 3
    client.cookies.set(SESSION_COOKIE, after_password)  # the old cookie is worthless now
    assert (await client.get("/")).status_code == 303


async def test_failmode_secure_refuses_when_duo_is_down(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory()
    await sign_in(client, "alice")
    simulator.control.post("/_sim/faults", json={"endpoints": ["preauth"], "status": 503})
    answer = await client.get("/2fa/duo/setup")
    assert answer.status_code == 503
    assert "cannot be reached" in answer.text
    assert ("failmode", "secure") in await audit_kinds(client)
    assert (await client.get("/")).status_code == 303


async def test_failmode_safe_signs_in_a_duo_user_on_the_password_when_duo_is_down(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory(failmode="safe")
    await enrol_with_duo_push(client, simulator)
    await sign_out(client)
    await sign_in(client, "alice")
    simulator.control.post("/_sim/faults", json={"endpoints": ["preauth"], "status": 500})
    answer = await client.get("/2fa/validate")
    assert answer.status_code == 303
    assert (await client.get("/")).status_code == 200
    kinds = await audit_kinds(client)
    assert ("failmode", "safe") in kinds
    assert ("second_factor", "bypassed") in kinds


async def test_failmode_safe_never_lets_in_a_user_who_has_not_set_up_duo(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    """Fail-open is for users whose usable methods include Duo Push: a user with no method
    yet would otherwise be let in for good on the password alone, outage after outage."""
    client = await gateway_factory(failmode="safe")
    await sign_in(client, "alice")
    simulator.control.post("/_sim/faults", json={"endpoints": ["preauth"], "status": 500})
    answer = await client.get("/2fa/duo/setup")
    assert answer.status_code == 400
    assert "cannot sign in without it" in answer.text
    assert (await client.get("/")).status_code == 303  # still waiting for a second factor
    kinds = await audit_kinds(client)
    assert ("second_factor", "bypass_refused") in kinds
    assert ("second_factor", "bypassed") not in kinds


async def test_wrong_duo_secret_fails_closed_even_with_failmode_safe(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    """Duo's 401 (a wrong secret key, a clock that is off) is Duo answering, not Duo down: a
    misconfigured key with failmode safe must not let everyone in."""
    client = await gateway_factory(failmode="safe")
    await enrol_with_duo_push(client, simulator)
    await sign_out(client)
    await sign_in(client, "alice")
    simulator.control.post("/_sim/faults", json={"endpoints": ["preauth"], "status": 401})
    answer = await client.get("/2fa/validate")
    assert answer.status_code == 503
    assert "refused its keys" in answer.text
    assert (await client.get("/")).status_code == 303
    kinds = await audit_kinds(client)
    assert ("duo_error", "40103") in kinds
    assert ("failmode", "safe") not in kinds
    assert ("second_factor", "bypassed") not in kinds


async def test_wrong_duo_secret_key_is_refused_with_its_cause(gateway_factory: Any) -> None:
    client = await gateway_factory(skey="x" * 40)
    await sign_in(client, "alice")
    answer = await client.get("/2fa/duo/setup")
    assert answer.status_code == 503
    assert "refused its keys" in answer.text


async def test_duo_policy_deny_refuses(gateway_factory: Any, simulator: RunningSimulator) -> None:
    client = await gateway_factory()
    simulator.add_user("alice", preauth="deny")
    await sign_in(client, "alice")
    answer = await client.get("/2fa/duo/setup")
    assert answer.status_code == 400
    assert (await client.get("/")).status_code == 303


async def test_duo_bypass_does_not_let_in_a_user_who_has_no_method(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    """Duo's bypass status waives Duo's factor, not twofa's: a user with no method yet is
    not let in by it (one who has Duo Push is, in the next test)."""
    client = await gateway_factory()
    simulator.add_user("alice", preauth="allow")
    await sign_in(client, "alice")
    refused = await client.get("/2fa/duo/setup")
    assert refused.status_code == 400
    assert "needs one you have set up" in refused.text
    assert (await client.get("/")).status_code == 303
    assert ("second_factor", "bypass_refused") in await audit_kinds(client)


async def test_duo_bypass_signs_in_a_duo_user_without_a_fresh_second_factor(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory()
    await enrol_with_duo_push(client, simulator)
    await sign_out(client)
    simulator.add_user("alice", preauth="allow")
    await sign_in(client, "alice")
    answer = await client.get("/2fa/validate")
    assert answer.status_code == 303
    assert (await client.get("/")).status_code == 200
    assert ("second_factor", "bypassed") in await audit_kinds(client)
    # signed in, but no second factor stands behind it: changing methods asks for one
    again = await client.get("/2fa/duo/setup")  # changing methods: a real factor first
    assert again.headers["location"] == "/2fa/use?step_up=1"


async def test_duo_passcode_signs_in_once(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory(autopush=False)
    simulator.add_user("alice")
    await sign_in(client, "alice")
    passcode = simulator.control.post("/_sim/passcodes", json={"username": "alice"}).json()[
        "passcode"
    ]
    page = await client.get("/2fa/validate")
    wrong = await client.post(
        "/2fa/duo/passcode", data={"passcode": "000000", "csrf_token": csrf_from(page.text)}
    )
    assert wrong.status_code == 401
    assert "not valid" in wrong.text
    right = await client.post(
        "/2fa/duo/passcode", data={"passcode": passcode, "csrf_token": csrf_from(page.text)}
    )
    assert right.status_code == 303
    assert (await client.get("/")).status_code == 200


async def test_challenge_of_another_session_is_refused(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    first = await gateway_factory()
    second = httpx.AsyncClient(base_url=str(first.base_url), timeout=30)
    try:
        simulator.add_user("alice")
        await sign_in(first, "alice")
        await sign_in(second, "alice")
        challenge = (await push(first)).json()["challenge"]
        stolen = await second.get(f"/2fa/duo/push/{challenge}", headers=JSON)
        assert stolen.status_code == 400
        assert "no longer valid" in stolen.json()["message"]
    finally:
        await second.aclose()


async def test_pushes_are_rate_limited_per_user(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory()
    simulator.add_user("alice")
    await sign_in(client, "alice")
    answers = [await push(client) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 400]
    assert "Too many push requests" in answers[-1].json()["message"]
    assert len(simulator.pending("alice")) == 3


async def test_password_guessing_locks_the_user(gateway_factory: Any) -> None:
    client = await gateway_factory()
    for _ in range(5):
        assert (await sign_in(client, "bob", "wrong")).status_code == 401
    locked = await sign_in(client, "bob")
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.text


async def test_a_restart_during_a_push_loses_nothing(
    database_url: str, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")
    async with (
        running_gateway(database_url, simulator) as (base_url, _settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as before,
    ):
        await sign_in(before, "alice")
        challenge = (await push(before)).json()["challenge"]
        cookies = dict(before.cookies)
    # The first gateway is gone; a new process on the same database picks up the push.
    async with (
        running_gateway(database_url, simulator, seed=False) as (base_url, _settings),
        httpx.AsyncClient(base_url=base_url, timeout=30, cookies=cookies) as after,
    ):
        simulator.settle(str(simulator.pending("alice")[0]["txid"]), "approve")
        states = [(await after.get(f"/2fa/duo/push/{challenge}", headers=JSON)).json()["state"]]
        if states[-1] == "pending":
            states.append(
                (await after.get(f"/2fa/duo/push/{challenge}", headers=JSON)).json()["state"]
            )
        assert states[-1] == "allow"
        assert (await after.get("/")).status_code == 200


async def test_slow_duo_keeps_the_page_waiting_not_failing(
    gateway_factory: Any, simulator: RunningSimulator
) -> None:
    client = await gateway_factory()
    simulator.add_user("alice")
    await sign_in(client, "alice")
    challenge = (await push(client)).json()["challenge"]
    simulator.control.post("/_sim/faults", json={"endpoints": ["auth_status"], "latency_ms": 1500})
    simulator.settle(str(simulator.pending("alice")[0]["txid"]), "approve")
    answer = await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)
    assert answer.json()["state"] == "allow"

"""Push fatigue as an attacker with alice's password meets it: real HTTP through the gateway and
the simulator, on SQLite and PostgreSQL. The 21st push of a day never reaches Duo, concurrent
pushes cannot pass the cap, a "This wasn't me" answer pauses pushes (the validation page says
why and offers other methods), the pause ends with time or the admin's Unlock, the console's
Overview shows it, and the doctor's "Duo alerts" line fails and recovers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from html import unescape
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import RunningSimulator
from tests.integration.test_api import issue_token
from tests.support.admin_sign_in import sign_in_admin
from tests.support.duo_flow import JSON, enrol_with_duo_push, send_push
from tests.support.gateway import csrf_from, running_gateway, sign_in
from twofa.clock import SystemClock
from twofa.config import Settings
from twofa.services.runtime import Gateway
from twofa.services.state.lockouts import push_pause_key
from twofa.storage.tables import AuditRow, ThrottleRow

pytestmark = pytest.mark.integration
ADMIN = ("admin", "admin-password-1")


@asynccontextmanager
async def gateway(
    database_url: str, simulator: RunningSimulator, **duo: Any
) -> AsyncIterator[tuple[str, Settings]]:
    """A gateway whose per-minute limit is out of the way, with an admin besides alice and bob."""
    async with running_gateway(database_url, simulator, pushes_per_minute=60, **duo) as running:
        await on_database(running[1], lambda g: g.accounts.add_user(*ADMIN, is_admin=True))
        yield running


async def on_database(settings: Settings, action: Any) -> Any:
    """Runs `action(gateway)` in a process of its own on the same database."""
    other = await Gateway.start(settings)
    try:
        return await action(other)
    finally:
        await other.close()


async def move_back(settings: Settings, by: timedelta) -> None:
    """Ends alice's pause and dates the whole audit log `by` ago, as time passing would."""

    async def act(gateway: Gateway) -> None:
        async with gateway.db.begin() as db:
            now = SystemClock().now()
            await db.execute(
                update(ThrottleRow)
                .where(ThrottleRow.key == push_pause_key("alice"))
                .values(locked_until=now - timedelta(seconds=1))
            )
            await db.execute(update(AuditRow).values(at=now - by))

    await on_database(settings, act)


def transactions(simulator: RunningSimulator) -> int:
    """Everything that ever reached Duo for alice: pushes answered or not."""
    return len(simulator.control.get("/_sim/transactions", params={"username": "alice"}).json())


async def audited(settings: Settings, kind: str) -> list[AuditRow]:
    async def read(gateway: Gateway) -> list[AuditRow]:
        async with gateway.db.begin() as db:
            query = select(AuditRow).where(AuditRow.kind == kind).order_by(AuditRow.id)
            return list((await db.scalars(query)).all())

    result: list[AuditRow] = await on_database(settings, read)
    return result


@asynccontextmanager
async def signed_in_again(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A new browser where alice passed her password and waits on the validation page."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        assert (await sign_in(client, "alice")).status_code == 303
        yield client


async def answer_with(
    client: httpx.AsyncClient, simulator: RunningSimulator, action: str
) -> dict[str, Any]:
    started = await send_push(client, "/2fa/validate")
    assert started.status_code == 200, started.text
    [pushed] = simulator.pending("alice")
    simulator.settle(str(pushed["txid"]), action).raise_for_status()
    for _ in range(5):
        body: dict[str, Any] = (
            await client.get(f"/2fa/duo/push/{started.json()['challenge']}", headers=JSON)
        ).json()
        if body["state"] != "pending":
            return body
    raise AssertionError("the answer never reached the page")


@asynccontextmanager
async def admin_client(
    base_url: str, simulator: RunningSimulator
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await sign_in_admin(client, simulator, *ADMIN)
        yield client


async def test_the_21st_push_of_a_day_is_refused_and_never_reaches_duo(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with gateway(database_url, simulator) as (base_url, settings):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await enrol_with_duo_push(first, simulator)  # push 1 of the day
        async with signed_in_again(base_url) as client:
            for _ in range(19):
                assert (await send_push(client, "/2fa/validate")).status_code == 200
                # each left to time out on the phone (or the next push waits to read it)
                [pushed] = simulator.pending("alice")
                simulator.settle(str(pushed["txid"]), "timeout").raise_for_status()
            assert transactions(simulator) == 20

            refused = await send_push(client, "/2fa/validate")

        assert refused.status_code == 400
        assert refused.json()["state"] == "error"
        assert "20 pushes, calls and texts in the last day" in refused.json()["message"]
        assert "another method" in refused.json()["message"]
        assert transactions(simulator) == 20  # nothing more reached Duo
        limited = [
            row
            for row in await audited(settings, "duo_push")
            if row.outcome not in ("sent", "timeout")
        ]
        assert [(r.outcome, r.detail.get("limit")) for r in limited] == [
            ("allow", None),
            ("rate_limited", "daily"),
        ]


async def test_a_fraud_answer_pauses_pushes_even_when_nobody_polled_it(
    database_url: str, simulator: RunningSimulator
) -> None:
    """Found by the adversary run: a script that sends pushes and never polls them never
    read the "This wasn't me", so nothing paused. The next request reads it first."""
    async with gateway(database_url, simulator) as (base_url, settings):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await enrol_with_duo_push(first, simulator)
        async with signed_in_again(base_url) as attacker:
            assert (await send_push(attacker, "/2fa/validate")).status_code == 200
            [pushed] = simulator.pending("alice")
            simulator.settle(str(pushed["txid"]), "fraud").raise_for_status()
            again = await send_push(attacker, "/2fa/validate")

        assert again.status_code == 400
        assert "You reported a Duo Push you did not make" in again.json()["message"]
        assert transactions(simulator) == 2  # the set-up push and the reported one
        [paused] = await audited(settings, "push_fatigue")
        assert (paused.outcome, paused.username) == ("paused", "alice")


async def test_concurrent_pushes_cannot_pass_the_daily_cap(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with gateway(database_url, simulator, pushes_per_day=4) as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await enrol_with_duo_push(first, simulator)  # 1 of 4
        async with signed_in_again(base_url) as client:
            csrf = csrf_from((await client.get("/2fa/validate")).text)
            headers = {**JSON, "X-CSRF-Token": csrf}
            answers = await asyncio.gather(
                *(client.post("/2fa/duo/push", headers=headers) for _ in range(10))
            )

    assert sorted(answer.status_code for answer in answers) == [200] * 3 + [400] * 7
    assert transactions(simulator) == 4


async def test_a_fraud_answer_pauses_pushes_and_the_validation_page_says_why(
    database_url: str, simulator: RunningSimulator
) -> None:
    factors = ["push", "phone", "passcode"]
    async with gateway(database_url, simulator, allowed_factors=factors) as (base_url, settings):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await enrol_with_duo_push(first, simulator)
        async with signed_in_again(base_url) as attacker:
            reported = await answer_with(attacker, simulator, "fraud")
            refused = await send_push(attacker, "/2fa/validate")
            call = await attacker.post(
                "/2fa/duo/call",
                headers={
                    **JSON,
                    "X-CSRF-Token": csrf_from((await attacker.get("/2fa/validate")).text),
                },
            )
        async with signed_in_again(base_url) as alice:
            page = await alice.get("/2fa/validate")

        assert reported["state"] == "fraud"
        assert re.search(r"paused until \d\d:\d\d UTC", reported["message"])
        assert refused.status_code == 400
        assert "You reported a Duo Push you did not make" in refused.json()["message"]
        assert call.status_code == 400
        assert "You reported a Duo Push you did not make" in call.json()["message"]
        assert transactions(simulator) == 2  # the set-up push and the reported one
        assert page.status_code == 200
        text = unescape(page.text)
        notice = re.search(r'<p class="error" role="alert" id="push-pause">(.*?)</p>', text)
        assert notice is not None, text
        assert "You reported a Duo Push you did not make" in notice.group(1)
        assert re.search(r"paused until \d\d:\d\d UTC", notice.group(1))
        assert 'data-autopush="false"' in text  # no push fires by itself
        assert 'id="send-push"' not in text
        assert 'id="call-me"' not in text
        assert 'href="/2fa/use"' in text  # the way to the user's other methods
        assert 'id="passcode-form"' in text  # Duo Mobile passcodes still work
        async with signed_in_again(base_url) as alice:
            page = await alice.get("/2fa/validate")
            wrong = await alice.post(
                "/2fa/duo/passcode", data={"csrf_token": csrf_from(page.text), "passcode": "0"}
            )
        assert wrong.status_code == 401  # the page again, after a wrong passcode...
        assert 'id="push-pause"' in wrong.text  # ...still saying why, still without a push
        assert 'id="send-push"' not in wrong.text
        assert 'data-autopush="false"' in wrong.text
        [paused] = await audited(settings, "push_fatigue")
        assert (paused.outcome, paused.username, paused.detail["minutes"]) == (
            "paused",
            "alice",
            60,
        )
        assert [row.outcome for row in await audited(settings, "duo_push")][-2:] == [
            "fraud",
            "paused",
        ]
        assert [row.outcome for row in await audited(settings, "duo_phone")] == ["paused"]

        await move_back(settings, timedelta(minutes=61))  # the pause is over
        async with signed_in_again(base_url) as alice:
            page = await alice.get("/2fa/validate")
            assert 'id="push-pause"' not in page.text
            assert 'data-autopush="true"' in page.text
            assert (await send_push(alice, "/2fa/validate")).status_code == 200
        assert transactions(simulator) == 3


async def test_the_console_shows_the_pause_and_its_unlock_lifts_it(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with gateway(database_url, simulator) as (base_url, _):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
            await enrol_with_duo_push(first, simulator)
        async with signed_in_again(base_url) as attacker:
            await answer_with(attacker, simulator, "fraud")
        async with admin_client(base_url, simulator) as admin:
            overview = unescape((await admin.get("/admin")).text)
            users = unescape((await admin.get("/admin/users", params={"q": "alice"})).text)
            unlocked = await admin.post(
                "/admin/users/unlock", data={"username": "alice", "csrf_token": csrf_from(users)}
            )
            after = unescape((await admin.get("/admin")).text)

        assert re.search(r'id="fraud-reports"[^>]*>1<', overview)
        assert "1 user reported a push they did not make" in overview
        assert re.search(
            r'href="/admin/users\?q=alice">alice</a>: paused until \d\d:\d\d', overview
        )
        assert re.search(r"locked until \d\d:\d\d UTC", users)
        assert unlocked.status_code == 303
        assert "No user's pushes are paused." in after
        assert re.search(r'id="fraud-reports"[^>]*>1<', after)  # the report stays counted
        async with signed_in_again(base_url) as alice:
            assert 'id="push-pause"' not in (await alice.get("/2fa/validate")).text
            assert (await send_push(alice, "/2fa/validate")).status_code == 200


async def status_of(api: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    answer = await api.get("/api/v1/status")
    assert answer.status_code == 200, answer.text
    return {check["part"]: check for check in answer.json()["checks"]}


async def test_the_doctor_line_fails_after_a_fraud_report_and_recovers_an_hour_later(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with gateway(database_url, simulator) as (base_url, settings):
        token = await issue_token(settings, "monitor")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as api:
            assert (await status_of(api))["Duo alerts"]["state"] == "ok"
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as first:
                await enrol_with_duo_push(first, simulator)
            async with signed_in_again(base_url) as attacker:
                await answer_with(attacker, simulator, "fraud")

            alerted = (await status_of(api))["Duo alerts"]
            await move_back(settings, timedelta(minutes=61))
            recovered = (await status_of(api))["Duo alerts"]

    assert alerted["state"] == "FAILED"
    assert "1 fraud report (alice)" in alerted["detail"]
    assert recovered["state"] == "ok"


async def test_the_doctor_line_fails_when_duo_refuses_the_keys(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with gateway(database_url, simulator, skey="w" * 40) as (base_url, settings):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as alice:
            await sign_in(alice, "alice")
            assert (await alice.get("/2fa/duo/setup")).status_code == 503
        token = await issue_token(settings, "monitor")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as api:
            alerted = (await status_of(api))["Duo alerts"]
            await move_back(settings, timedelta(minutes=61))
            recovered = (await status_of(api))["Duo alerts"]

    assert alerted["state"] == "FAILED"
    assert "refused twofa's keys or signature 1 time (HTTP 401)" in alerted["detail"]
    assert recovered["state"] == "ok"

"""The console's Audit Log and Overview over real HTTP: filters, time ranges and pages, the CSV
export and its content, and the Overview's figures after real sign-ins and Duo pushes through
the simulator."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, sign_in
from tests.support.user_management import ADMIN, AdminBrowser, signed_in_admin
from twofa.clock import SystemClock
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow

JSON = {"Accept": "application/json"}


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[AdminBrowser]:
    async with sqlite_database(tmp_path) as url, signed_in_admin(url, simulator) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def console_on_any_database(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[AdminBrowser]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, signed_in_admin(url, simulator) as running:
        yield running


async def insert_events(console: AdminBrowser, *rows: AuditRow) -> None:
    async def insert(gateway: Gateway) -> None:
        async with gateway.db.begin() as db:
            db.add_all(rows)

    await console.query(insert)


def event(at: datetime, kind: str = "test_event", **fields: object) -> AuditRow:
    values: dict[str, object] = {
        "outcome": "ok",
        "username": "",
        "client_ip": "",
        "user_agent": "",
        "detail": {},
        **fields,
    }
    return AuditRow(at=at, kind=kind, **values)


def listed_events(page: str) -> list[tuple[str, str, str]]:
    return re.findall(
        r'<tr data-kind="([^"]*)" data-outcome="([^"]*)" data-username="([^"]*)">', page
    )


async def audit_page(console: AdminBrowser, **params: str) -> httpx.Response:
    return await console.client.get("/admin/audit", params=params)


async def test_audit_log_filters_by_user_kind_and_outcome(
    console_on_any_database: AdminBrowser,
) -> None:
    console = console_on_any_database
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as browser:
        await sign_in(browser, "bob", "wrong")
        await sign_in(browser, "bob")
    answer = await audit_page(console, username="bob", kind="login")
    assert answer.status_code == 200
    assert listed_events(answer.text) == [
        ("login", "password_ok", "bob"),
        ("login", "bad_password", "bob"),
    ]
    only_bad = await audit_page(console, username="bob", outcome="bad_password")
    assert listed_events(only_bad.text) == [("login", "bad_password", "bob")]
    assert '<option value="bad_password" selected>' in only_bad.text


async def test_audit_log_time_range(console_on_any_database: AdminBrowser) -> None:
    console = console_on_any_database
    await insert_events(
        console,
        *(
            event(datetime(2020, 1, day, 10, 0, tzinfo=UTC), username=f"d{day}")
            for day in (1, 2, 3)
        ),
    )
    one_day = await audit_page(console, since="2020-01-02", until="2020-01-02")
    assert listed_events(one_day.text) == [("test_event", "ok", "d2")]
    assert 'value="2020-01-02T00:00"' in one_day.text  # the inputs show the range in force
    assert 'value="2020-01-03T00:00"' in one_day.text
    from_minute = await audit_page(console, kind="test_event", since="2020-01-02T10:00")
    assert [row[2] for row in listed_events(from_minute.text)] == ["d3", "d2"]


async def test_bad_time_is_shown_next_to_its_field(console: AdminBrowser) -> None:
    answer = await audit_page(console, since="last tuesday")
    assert answer.status_code == 400
    assert 'id="since-problem" role="alert">&#39;last tuesday&#39; is not a date' in answer.text
    backwards = await audit_page(console, since="2020-01-02", until="2020-01-01")
    assert 'id="until-problem" role="alert">must be later than the start' in backwards.text


async def test_audit_log_pages_newest_first(console: AdminBrowser) -> None:
    start = datetime(2021, 5, 1, tzinfo=UTC)
    await insert_events(
        console,
        *(event(start + timedelta(minutes=n), username=f"u{n:02}") for n in range(60)),
    )
    first = await audit_page(console, kind="test_event")
    names = [row[2] for row in listed_events(first.text)]
    assert len(names) == 50
    assert names[:2] == ["u59", "u58"]
    assert "events 1 to 50 of 60" in first.text
    second = await audit_page(console, kind="test_event", page="2")
    assert [row[2] for row in listed_events(second.text)] == [f"u{n:02}" for n in range(9, -1, -1)]
    assert 'rel="prev"' in second.text
    assert 'rel="next"' not in second.text


async def test_csv_export_has_the_filtered_events_and_is_audited(console: AdminBrowser) -> None:
    at = datetime(2022, 3, 4, 5, 6, 7, tzinfo=UTC)
    await insert_events(
        console,
        event(
            at,
            username="eve",
            client_ip="198.51.100.9",
            user_agent='Agent, "quoted"\nnext line',
            detail={"device": "phone, 1", "password": "never-shown"},
        ),
        event(at + timedelta(days=1), username="zed"),
        event(at, kind="other_event", username="eve"),
    )
    answer = await console.client.get(
        "/admin/audit.csv", params={"kind": "test_event", "until": "2022-03-04"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith('attachment; filename="twofa-audit-')
    rows = list(csv.DictReader(io.StringIO(answer.text, newline="")))
    assert rows == [
        {
            "at": "2022-03-04T05:06:07+00:00",
            "kind": "test_event",
            "outcome": "ok",
            "username": "eve",
            "client_ip": "198.51.100.9",
            "user_agent": 'Agent, "quoted"\nnext line',
            "detail": json.dumps({"device": "phone, 1", "password": "(redacted)"}, sort_keys=True),
        }
    ]
    assert "never-shown" not in answer.text
    [export] = await console.audit_rows("audit_export")
    assert export.username == ADMIN
    assert export.detail == {
        "filters": {"kind": "test_event", "until": "2022-03-05T00:00:00+00:00"}
    }


async def test_audit_page_links_to_the_export_with_its_filters(console: AdminBrowser) -> None:
    page = await audit_page(console, username="bob", kind="login")
    assert 'href="/admin/audit.csv?username=bob&amp;kind=login"' in page.text


async def test_csv_export_with_a_bad_filter_is_refused(console: AdminBrowser) -> None:
    answer = await console.client.get("/admin/audit.csv", params={"until": "soon"})
    assert answer.status_code == 400
    assert "until: 'soon' is not a date or time" in answer.text
    assert await console.audit_rows("audit_export") == []


def figure(page: str, name: str) -> int:
    found = re.search(rf'id="{name}">(\d+)<', page)
    assert found, f"no figure {name!r} on the overview"
    return int(found.group(1))


async def overview(console: AdminBrowser) -> str:
    answer = await console.client.get("/admin")
    assert answer.status_code == 200
    return answer.text


async def start_push(client: httpx.AsyncClient) -> str:
    html = (await client.get("/2fa/duo/setup")).text
    answer = await client.post("/2fa/duo/push", headers={**JSON, "X-CSRF-Token": csrf_from(html)})
    assert answer.status_code == 200, answer.text
    challenge: str = answer.json()["challenge"]
    return challenge


async def settle_push(client: httpx.AsyncClient, simulator: RunningSimulator, action: str) -> str:
    challenge = await start_push(client)
    simulator.settle(str(simulator.pending("alice")[0]["txid"]), action)
    state = "pending"
    for _ in range(3):  # a long-poll may end just before Duo hears the answer
        state = (await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)).json()["state"]
        if state != "pending":
            break
    return state


async def test_overview_counts_users_and_the_last_24_hours(
    console_on_any_database: AdminBrowser, simulator: RunningSimulator
) -> None:
    console = console_on_any_database
    start = await overview(console)
    # root, an admin with Duo Push set up; alice, through group engineering, still pending
    assert [figure(start, name) for name in ("users-required", "users-enrolled")] == [2, 1]
    assert figure(start, "users-pending") == 1
    assert figure(start, "sign-ins") == 1  # the admin's own
    assert "Configured: API host <code>http://127.0.0.1:" in start

    simulator.add_user("alice")
    await insert_events(
        console,
        event(SystemClock().now() - timedelta(hours=25), kind="login", outcome="password_ok"),
        event(SystemClock().now() - timedelta(hours=25), kind="failmode", outcome="secure"),
    )
    for _ in range(2):
        async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as bob:
            assert (await sign_in(bob, "bob")).status_code == 303
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as alice:
        await sign_in(alice, "alice")
        assert await settle_push(alice, simulator, "deny") == "deny"
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as alice:
        await sign_in(alice, "alice")
        faults = {"endpoints": ["preauth"], "status": 503, "count": 1}
        simulator.control.post("/_sim/faults", json=faults).raise_for_status()
        assert (await alice.get("/2fa/duo/setup")).status_code == 503
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as alice:
        await sign_in(alice, "alice")
        assert await settle_push(alice, simulator, "approve") == "allow"

    after = await overview(console)
    assert figure(after, "sign-ins") == 1 + 2 + 3
    assert figure(after, "denied-pushes") == 1
    assert figure(after, "failmode-events") == 1
    assert [figure(after, name) for name in ("users-required", "users-enrolled")] == [2, 2]
    assert figure(after, "users-pending") == 0
    assert figure(after, "users-total") == 3


async def test_overview_leaves_disabled_accounts_out(console: AdminBrowser) -> None:
    await console.post("/admin/users/account", {"username": "alice", "enabled": "0"})
    page = await overview(console)
    assert figure(page, "users-required") == 1  # root, the admin, who has Duo Push
    assert figure(page, "users-pending") == 0
    assert "1 disabled account not counted" in page

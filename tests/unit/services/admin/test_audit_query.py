"""Reading the audit log back: filters, newest-first pages, time ranges, and a CSV export that
survives commas, quotes and newlines, defuses spreadsheet formulas and never shows a secret.
Runs on SQLite and PostgreSQL, whose date handling differs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, sqlite_database
from tests.unit.services.conftest import START, audit_rows
from twofa.clock import FrozenClock
from twofa.domain.client import ClientInfo
from twofa.services.admin import audit_query
from twofa.services.admin.audit_query import (
    CSV_COLUMNS,
    AuditEntry,
    AuditFilterRejected,
    AuditQueryService,
    csv_text,
    datetime_local,
    parse_criteria,
    parse_time,
)
from twofa.services.runtime import Gateway
from twofa.services.state import audit
from twofa.storage.audit_log import AuditCriteria
from twofa.storage.tables import AuditRow


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        yield url


async def record(
    gateway: Gateway, kind: str, outcome: str, username: str = "", **detail: object
) -> None:
    async with gateway.db.begin() as db:
        audit.record(db, gateway.clock, kind, outcome, username=username, **detail)


async def record_timeline(gateway: Gateway, clock: FrozenClock) -> None:
    """Five events an hour apart from START: 12:00 … 16:00 UTC."""
    events = [
        ("login", "password_ok", "alice"),
        ("login", "bad_password", "bob"),
        ("duo_push", "deny", "alice"),
        ("login", "password_ok", "bob"),
        ("failmode", "secure", "alice"),
    ]
    for kind, outcome, username in events:
        await record(gateway, kind, outcome, username)
        clock.advance(timedelta(hours=1))


def queries(gateway: Gateway) -> AuditQueryService:
    return AuditQueryService(gateway.db, gateway.clock)


def summary(entries: tuple[AuditEntry, ...]) -> list[tuple[str, str, str]]:
    return [(entry.kind, entry.outcome, entry.username) for entry in entries]


async def test_page_is_newest_first_with_the_total(gateway: Gateway, clock: FrozenClock) -> None:
    await record_timeline(gateway, clock)
    page = await queries(gateway).page(AuditCriteria(), limit=2)
    assert page.total == 5
    assert summary(page.entries) == [
        ("failmode", "secure", "alice"),
        ("login", "password_ok", "bob"),
    ]
    assert page.has_next
    assert not page.has_previous
    last = await queries(gateway).page(AuditCriteria(), offset=4, limit=2)
    assert summary(last.entries) == [("login", "password_ok", "alice")]
    assert last.has_previous
    assert not last.has_next


async def test_events_at_the_same_instant_keep_their_order(gateway: Gateway) -> None:
    for n in range(3):
        await record(gateway, "login", f"attempt-{n}")
    page = await queries(gateway).page(AuditCriteria())
    assert [entry.outcome for entry in page.entries] == ["attempt-2", "attempt-1", "attempt-0"]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (AuditCriteria(username="alice"), ["failmode", "duo_push", "login"]),
        (AuditCriteria(kind="login"), ["login", "login", "login"]),
        (AuditCriteria(outcome="password_ok"), ["login", "login"]),
        (AuditCriteria(username="bob", outcome="password_ok"), ["login"]),
        (AuditCriteria(username="carol"), []),
    ],
)
async def test_filters_by_user_kind_and_outcome(
    gateway: Gateway, clock: FrozenClock, criteria: AuditCriteria, expected: list[str]
) -> None:
    await record_timeline(gateway, clock)
    page = await queries(gateway).page(criteria)
    assert [entry.kind for entry in page.entries] == expected
    assert page.total == len(expected)


async def test_time_range_includes_the_start_and_excludes_the_end(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await record_timeline(gateway, clock)
    criteria = parse_criteria(since="2026-11-28T13:00", until="2026-11-28T15:00")
    page = await queries(gateway).page(criteria)
    assert summary(page.entries) == [
        ("duo_push", "deny", "alice"),
        ("login", "bad_password", "bob"),
    ]


async def test_times_with_a_zone_are_converted_to_utc(gateway: Gateway, clock: FrozenClock) -> None:
    await record_timeline(gateway, clock)
    criteria = parse_criteria(since="2026-11-28T17:30+02:00")  # 15:30 UTC
    assert summary((await queries(gateway).page(criteria)).entries) == [
        ("failmode", "secure", "alice")
    ]


async def test_a_bare_until_date_includes_that_whole_day(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await record_timeline(gateway, clock)
    same_day = await queries(gateway).page(parse_criteria(until="2026-11-28"))
    day_before = await queries(gateway).page(parse_criteria(until="2026-11-27"))
    assert same_day.total == 5
    assert day_before.total == 0


def test_parse_time_reads_dates_datetime_local_and_iso() -> None:
    assert parse_time("2026-11-28") == datetime(2026, 11, 28, tzinfo=UTC)
    assert parse_time("2026-11-28T14:05") == datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
    assert parse_time("2026-11-28T14:05:09Z") == datetime(2026, 11, 28, 14, 5, 9, tzinfo=UTC)
    assert parse_time("2026-11-28", end_of_day=True) == datetime(2026, 11, 29, tzinfo=UTC)
    assert parse_time("2026-11-28T14:05", end_of_day=True) == datetime(
        2026, 11, 28, 14, 5, tzinfo=UTC
    )


def test_bad_times_are_reported_by_field_all_at_once() -> None:
    with pytest.raises(AuditFilterRejected) as rejected:
        parse_criteria(since="yesterday", until="28/11/2026")
    assert set(rejected.value.problems) == {"since", "until"}
    assert "'yesterday' is not a date or time" in rejected.value.problems["since"]


def test_an_end_before_the_start_is_refused() -> None:
    with pytest.raises(AuditFilterRejected) as rejected:
        parse_criteria(since="2026-11-28T15:00", until="2026-11-28T14:00")
    assert rejected.value.problems == {"until": "must be later than the start"}


def test_datetime_local_shows_minutes_and_seconds_only_when_set() -> None:
    assert datetime_local(datetime(2026, 11, 28, 14, 5, tzinfo=UTC)) == "2026-11-28T14:05"
    assert datetime_local(datetime(2026, 11, 28, 14, 5, 9, tzinfo=UTC)) == "2026-11-28T14:05:09"
    assert datetime_local(None) == ""


def entry(**fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "id": 1,
        "at": START,
        "kind": "login",
        "outcome": "bad_password",
        "username": "alice",
        "client_ip": "203.0.113.7",
        "user_agent": "pytest",
        "detail": {},
        **fields,
    }
    return AuditEntry(**values)  # type: ignore[arg-type]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_survives_commas_quotes_and_newlines() -> None:
    tricky = 'Mozilla/5.0 (X11, "Linux")\nsecond line, with comma'
    text = csv_text([entry(user_agent=tricky, detail={"note": 'a "quoted", \n value'})])
    [row] = read_csv(text)
    assert row["user_agent"] == tricky
    assert json.loads(row["detail"]) == {"note": 'a "quoted", \n value'}
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert row["at"] == "2026-11-28T12:00:00+00:00"


@pytest.mark.parametrize("username", ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)"])
def test_csv_defuses_cells_a_spreadsheet_would_run(username: str) -> None:
    [row] = read_csv(csv_text([entry(username=username)]))
    assert row["username"] == "'" + username


def test_secret_looking_detail_is_masked_at_any_depth() -> None:
    row = AuditRow(
        id=1,
        at=START,
        kind="settings_duo",
        outcome="saved",
        username="root",
        client_ip="",
        user_agent="",
        detail={"password": "hunter2", "after": {"skey": "s3cret", "ikey": "DI1"}, "token": ""},
    )
    decoded = json.loads(read_csv(csv_text([AuditEntry.of(row)]))[0]["detail"])
    assert decoded == {
        "password": "(redacted)",
        "after": {"skey": "(redacted)", "ikey": "DI1"},
        "token": "",  # nothing to hide
    }


async def test_stored_secrets_never_reach_the_page_or_the_export(gateway: Gateway) -> None:
    await record(gateway, "settings_duo", "saved", "root", after={"skey": "s3cret-value"})
    page = await queries(gateway).page(AuditCriteria())
    assert "s3cret-value" not in page.entries[0].detail_json
    exported = "".join([chunk async for chunk in queries(gateway).export_csv(AuditCriteria(), "t")])
    assert "s3cret-value" not in exported


async def test_export_reads_in_batches_oldest_first_and_is_audited(
    gateway: Gateway, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_query, "EXPORT_BATCH", 2)
    await record_timeline(gateway, clock)
    client = ClientInfo(ip="198.51.100.4", user_agent="browser")
    chunks = [
        chunk
        async for chunk in queries(gateway).export_csv(
            AuditCriteria(username="alice"), "root", client
        )
    ]
    rows = read_csv("".join(chunks))
    assert [(row["kind"], row["at"]) for row in rows] == [
        ("login", "2026-11-28T12:00:00+00:00"),
        ("duo_push", "2026-11-28T14:00:00+00:00"),
        ("failmode", "2026-11-28T16:00:00+00:00"),
    ]
    assert len(chunks) == 3  # the header, then two batches
    [export] = await audit_rows(gateway, "audit_export")
    assert (export.username, export.client_ip) == ("root", "198.51.100.4")
    assert export.detail == {"filters": {"username": "alice"}}


async def test_export_of_nothing_is_just_the_header(gateway: Gateway) -> None:
    criteria = AuditCriteria(kind="no-such-kind")
    text = "".join([chunk async for chunk in queries(gateway).export_csv(criteria, "root")])
    assert text == ",".join(CSV_COLUMNS) + "\r\n"


async def test_choices_list_the_kinds_and_outcomes_present(
    gateway: Gateway, clock: FrozenClock
) -> None:
    await record_timeline(gateway, clock)
    kinds, outcomes = await queries(gateway).choices()
    assert kinds == ["duo_push", "failmode", "login"]
    assert outcomes == ["bad_password", "deny", "password_ok", "secure"]

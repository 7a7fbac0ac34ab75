"""Reading the audit log back: filters typed by an admin (user, kind, outcome, time range)
turned into checked criteria, newest-first pages for the console and the CLI, and a CSV export
that stays safe to open in a spreadsheet and never carries a secret."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.errors import Invalid
from twofa.services.state import audit
from twofa.storage.audit_log import AuditCriteria as AuditCriteria  # re-exported for web
from twofa.storage.audit_log import AuditSearch
from twofa.storage.tables import AuditRow

CSV_COLUMNS: Final = ("at", "kind", "outcome", "username", "client_ip", "user_agent", "detail")
MAX_PAGE_SIZE: Final = 500
EXPORT_BATCH: Final = 500
REDACTED: Final = "(redacted)"
# Services redact before they write; these keys are masked again on the way out, in case one
# ever slips through.
SECRET_DETAIL_KEYS: Final = frozenset(
    {"password", "skey", "secret", "secret_key", "token", "passcode", "api_token"}
)
# A cell starting with one of these is run as a formula by spreadsheet programs; usernames
# and user agents come from strangers, so such cells get a leading apostrophe.
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class AuditFilterRejected(Invalid):
    """The filter as typed cannot be used; `problems` maps each field to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {why}" for name, why in problems.items()), problems)


def parse_time(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date (`2026-11-28`), a browser's datetime-local (`2026-11-28T14:05`) or a full
    ISO timestamp. Times without a zone are UTC. With `end_of_day`, a bare date means the
    start of the next day, so that "until 2026-11-28" includes the whole 28th."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or time: use 2026-11-28 or 2026-11-28T14:05"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end_of_day and _DATE_ONLY.match(text):
        value += timedelta(days=1)
    return value.astimezone(UTC)


def parse_criteria(
    *, username: str = "", kind: str = "", outcome: str = "", since: str = "", until: str = ""
) -> AuditCriteria:
    """Criteria from what the admin typed; every problem is reported at once, by field."""
    problems: dict[str, str] = {}
    bounds: dict[str, datetime | None] = {"since": None, "until": None}
    for name, text in (("since", since), ("until", until)):
        if text.strip():
            try:
                bounds[name] = parse_time(text, end_of_day=name == "until")
            except ValueError as exc:
                problems[name] = str(exc)
    start, end = bounds["since"], bounds["until"]
    if start is not None and end is not None and end <= start:
        problems["until"] = "must be later than the start"
    if problems:
        raise AuditFilterRejected(problems)
    return AuditCriteria(
        username=username.strip(),
        kind=kind.strip(),
        outcome=outcome.strip(),
        since=start,
        until=end,
    )


def datetime_local(value: datetime | None) -> str:
    """The value of an `<input type="datetime-local">` for this instant, in UTC."""
    if value is None:
        return ""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S" if value.second else "%Y-%m-%dT%H:%M")


def redacted(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail with every value under a secret-looking key masked, at any depth."""
    return {key: _masked(key, value) for key, value in detail.items()}


def _masked(key: str, value: Any) -> Any:
    if key.lower() in SECRET_DETAIL_KEYS and value:
        return REDACTED
    if isinstance(value, Mapping):
        return redacted(value)
    return value


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    kind: str
    outcome: str
    username: str
    client_ip: str
    user_agent: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: AuditRow) -> AuditEntry:
        return cls(
            id=row.id,
            at=row.at.astimezone(UTC),
            kind=row.kind,
            outcome=row.outcome,
            username=row.username,
            client_ip=row.client_ip,
            user_agent=row.user_agent,
            detail=redacted(row.detail or {}),
        )

    @property
    def detail_json(self) -> str:
        return json.dumps(self.detail, sort_keys=True, ensure_ascii=False, default=str)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "outcome": self.outcome,
            "username": self.username,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_previous(self) -> bool:
        return self.offset > 0

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.entries) < self.total


def csv_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def csv_text(entries: Iterable[AuditEntry], *, header: bool = True) -> str:
    """RFC 4180 CSV (quotes, commas and newlines quoted by the csv module), CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if header:
        writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(
            [
                entry.at.astimezone(UTC).isoformat(),
                *(
                    csv_cell(text)
                    for text in (
                        entry.kind,
                        entry.outcome,
                        entry.username,
                        entry.client_ip,
                        entry.user_agent,
                    )
                ),
                entry.detail_json,
            ]
        )
    return buffer.getvalue()


class AuditQueryService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = sessions
        self._clock = clock

    async def page(self, criteria: AuditCriteria, *, offset: int = 0, limit: int = 50) -> AuditPage:
        """Newest first; `limit` is capped at MAX_PAGE_SIZE."""
        offset, limit = max(offset, 0), min(max(limit, 1), MAX_PAGE_SIZE)
        async with self._db.begin() as db:
            search = AuditSearch(db)
            total = await search.count(criteria)
            rows = await search.newest_first(criteria, offset=offset, limit=limit)
            return AuditPage(tuple(map(AuditEntry.of, rows)), total, offset, limit)

    async def choices(self) -> tuple[list[str], list[str]]:
        """The event kinds and outcomes present in the log, sorted, for the filter lists."""
        async with self._db.begin() as db:
            search = AuditSearch(db)
            return sorted(await search.kinds()), sorted(await search.outcomes())

    async def entries_in_time_order(self, criteria: AuditCriteria) -> AsyncIterator[AuditEntry]:
        """Every matching event, oldest first, read in batches (one short transaction each)."""
        after: tuple[datetime, int] | None = None
        while True:
            async with self._db.begin() as db:
                rows = await AuditSearch(db).oldest_after(criteria, after, EXPORT_BATCH)
            for row in rows:
                yield AuditEntry.of(row)
            if len(rows) < EXPORT_BATCH:
                return
            after = (rows[-1].at, rows[-1].id)

    async def export_csv(
        self, criteria: AuditCriteria, actor: str, client: ClientInfo = CLI
    ) -> AsyncIterator[str]:
        """The CSV export in chunks (header first). The export itself is audited: who read
        which part of the log."""
        await self.record_export(criteria, actor, client)
        yield csv_text((), header=True)
        batch: list[AuditEntry] = []
        async for entry in self.entries_in_time_order(criteria):
            batch.append(entry)
            if len(batch) == EXPORT_BATCH:
                yield csv_text(batch, header=False)
                batch = []
        if batch:
            yield csv_text(batch, header=False)

    async def record_export(self, criteria: AuditCriteria, actor: str, client: ClientInfo) -> None:
        async with self._db.begin() as db:
            audit.record(
                db,
                self._clock,
                "audit_export",
                "ok",
                username=actor,
                client=client,
                filters=criteria_json(criteria),
            )


def criteria_json(criteria: AuditCriteria) -> dict[str, str]:
    """The criteria that are set, as text (for the audit record and for links)."""
    values = {
        "username": criteria.username,
        "kind": criteria.kind,
        "outcome": criteria.outcome,
        "since": criteria.since.isoformat() if criteria.since else "",
        "until": criteria.until.isoformat() if criteria.until else "",
    }
    return {name: value for name, value in values.items() if value}

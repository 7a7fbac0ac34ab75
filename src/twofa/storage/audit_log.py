"""Writes to the audit log and the filtered reads of it that the console, the CLI and the CSV
export make. Like every repository it never commits: the service owns the transaction.

A record is kept on the session and written by one INSERT as the transaction commits
(`write_pending`, a before-commit listener on every session): nothing of the ORM's flush
for a row nobody reads back in its own transaction, on the paths every sign-in takes. A
transaction rolled back writes none of its records, as before."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypedDict

from sqlalchemy import ColumnElement, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from twofa.storage.tables import AuditRow, table_of

_PENDING: Final = "twofa.audit_log.pending"
_INSERT: Final = insert(table_of(AuditRow))


class AuditLog:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    def add(self, values: AuditValues) -> None:
        """Written as the transaction commits (`write_pending`)."""
        self._db.info.setdefault(_PENDING, []).append(values)

    async def recent(self, limit: int = 100, username: str | None = None) -> Sequence[AuditRow]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if username is not None:
            query = query.where(AuditRow.username == username)
        return (await self._db.scalars(query)).all()


class AuditValues(TypedDict):
    at: datetime
    kind: str
    outcome: str
    username: str
    client_ip: str
    user_agent: str
    detail: dict[str, Any]


@event.listens_for(Session, "before_commit")
def write_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.execute(_INSERT, pending)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


@dataclass(frozen=True)
class AuditCriteria:
    """Which audit events to select. Empty text and None match everything; `since` is
    inclusive and `until` exclusive, both aware datetimes."""

    username: str = ""
    kind: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None


class AuditSearch:
    """Filtered reads of the audit log for the console, the CLI and the CSV export."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def count(self, criteria: AuditCriteria) -> int:
        query = select(func.count()).select_from(AuditRow).where(*_audit_conditions(criteria))
        return int(await self._db.scalar(query) or 0)

    async def newest_first(
        self, criteria: AuditCriteria, *, offset: int, limit: int
    ) -> Sequence[AuditRow]:
        query = (
            select(AuditRow)
            .where(*_audit_conditions(criteria))
            .order_by(AuditRow.at.desc(), AuditRow.id.desc())
            .offset(offset)
            .limit(limit)
        )
        return (await self._db.scalars(query)).all()

    async def oldest_after(
        self, criteria: AuditCriteria, after: tuple[datetime, int] | None, limit: int
    ) -> Sequence[AuditRow]:
        """The next `limit` events in time order after the (at, id) position `after`: a
        keyset page, so an export of any size reads in steady batches."""
        query = select(AuditRow).where(*_audit_conditions(criteria))
        if after is not None:
            at, row_id = after
            query = query.where((AuditRow.at > at) | ((AuditRow.at == at) & (AuditRow.id > row_id)))
        query = query.order_by(AuditRow.at, AuditRow.id).limit(limit)
        return (await self._db.scalars(query)).all()

    async def kinds(self) -> list[str]:
        return list((await self._db.scalars(select(AuditRow.kind).distinct())).all())

    async def outcomes(self) -> list[str]:
        return list((await self._db.scalars(select(AuditRow.outcome).distinct())).all())

    async def count_events(self, kind: str, outcomes: Sequence[str], since: datetime) -> int:
        """Events of `kind` at or after `since`, with any of `outcomes` (all when empty)."""
        query = select(func.count()).where(AuditRow.kind == kind, AuditRow.at >= since)
        if outcomes:
            query = query.where(AuditRow.outcome.in_(outcomes))
        return int(await self._db.scalar(query) or 0)


def _audit_conditions(criteria: AuditCriteria) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if criteria.username:
        conditions.append(AuditRow.username == criteria.username)
    if criteria.kind:
        conditions.append(AuditRow.kind == criteria.kind)
    if criteria.outcome:
        conditions.append(AuditRow.outcome == criteria.outcome)
    if criteria.since is not None:
        conditions.append(AuditRow.at >= criteria.since)
    if criteria.until is not None:
        conditions.append(AuditRow.at < criteria.until)
    return conditions

"""/api/v1/audit: the audit log, newest first, filtered by user, event kind, outcome and time
range, one page at a time: the console's Audit Log page, read through the same service (so
secret-looking detail values come out redacted here too)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from twofa.services.admin.audit_query import AuditCriteria
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import Limit, Name150, Offset, Text100

router = APIRouter(
    prefix="/audit", tags=["audit"], route_class=ApiRoute, responses=error_responses(401, 422)
)


def in_utc(value: datetime | None) -> datetime | None:
    """The database compares UTC times; a time that cannot be one (year 1 east of UTC) is a
    validation error, not an overflow."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


Moment = Annotated[AwareDatetime | None, AfterValidator(in_utc)]


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    kind: str = Field(description='e.g. "user_add", "settings_duo", "login".')
    outcome: str
    username: str = Field(description="The user the event is about, if any.")
    client_ip: str
    user_agent: str
    detail: dict[str, Any] = Field(description='Includes "actor" for admin actions.')


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    total: int
    offset: int
    limit: int


@router.get("", summary="Audit events, newest first")
async def audit_events(
    api: Api,
    user: Annotated[Name150 | None, Query(description="Only events about this user.")] = None,
    kind: Annotated[Text100 | None, Query(description="Only this kind of event.")] = None,
    outcome: Annotated[Text100 | None, Query(description='e.g. "ok", "denied".')] = None,
    since: Annotated[Moment, Query(description="From this time on (inclusive).")] = None,
    until: Annotated[Moment, Query(description="Before this time (exclusive).")] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> AuditPage:
    criteria = AuditCriteria(
        username=user or "", kind=kind or "", outcome=outcome or "", since=since, until=until
    )
    page = await api.gateway.audit_queries.page(criteria, offset=offset, limit=limit)
    items = [
        AuditEventOut(
            id=entry.id,
            at=entry.at,
            kind=entry.kind,
            outcome=entry.outcome,
            username=entry.username,
            client_ip=entry.client_ip,
            user_agent=entry.user_agent,
            detail=entry.detail,
        )
        for entry in page.entries
    ]
    return AuditPage(items=items, total=page.total, offset=offset, limit=limit)

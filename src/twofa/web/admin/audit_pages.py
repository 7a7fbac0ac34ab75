"""The console's Audit Log: filter by user, event kind, outcome and time range, newest first a
page at a time, and the same selection as a CSV download. A filter that cannot be read comes
back with the reason next to its field."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from twofa.services.admin.audit_query import (
    AuditCriteria,
    AuditEntry,
    AuditFilterRejected,
    AuditQueryService,
    datetime_local,
    parse_criteria,
)
from twofa.web.admin.guard import SignedInAdmin
from twofa.web.admin.listing import Pager, fetch_page, page_number
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")

EVENTS_PER_PAGE: Final = 50
TAB: Final = "Audit Log"
FILTER_FIELDS: Final = ("username", "kind", "outcome", "since", "until")


def audit_queries(request: Request) -> AuditQueryService:
    return gateway_of(request).audit_queries


def typed_filter(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "").strip() for name in FILTER_FIELDS}


def shown_filter(typed: dict[str, str], criteria: AuditCriteria) -> dict[str, str]:
    """What the filter form shows: the times as the datetime-local inputs expect them."""
    return {
        **typed,
        "since": datetime_local(criteria.since),
        "until": datetime_local(criteria.until),
    }


@router.get("/audit")
async def audit_log(request: Request, admin: SignedInAdmin) -> Response:
    typed = typed_filter(request)
    queries = audit_queries(request)
    kinds, outcomes = await queries.choices()
    common: dict[str, Any] = {
        "title": TAB,
        "active_tab": TAB,
        "admin_name": admin.username,
        "kinds": kinds,
        "outcomes": outcomes,
    }
    try:
        criteria = parse_criteria(**typed)
    except AuditFilterRejected as exc:
        return render(
            request,
            "admin/audit.html",
            status_code=400,
            form=typed,
            problems=exc.problems,
            entries=(),
            pager=None,
            **common,
        )
    form = shown_filter(typed, criteria)

    async def fetch(offset: int, limit: int) -> tuple[Sequence[AuditEntry], int]:
        result = await queries.page(criteria, offset=offset, limit=limit)
        return result.entries, result.total

    requested = page_number(request.query_params.get("page"))
    entries, total, page = await fetch_page(fetch, requested, EVENTS_PER_PAGE)
    query = tuple((name, form[name]) for name in FILTER_FIELDS)
    return render(
        request,
        "admin/audit.html",
        form=form,
        problems={},
        entries=entries,
        pager=Pager(page, EVENTS_PER_PAGE, total, "/admin/audit", query),
        csv_url="/admin/audit.csv?" + urllib.parse.urlencode([(n, v) for n, v in query if v]),
        **common,
    )


@router.get("/audit.csv")
async def audit_csv(request: Request, admin: SignedInAdmin) -> Response:
    """The events matching the filter, oldest first, streamed as CSV. The download is
    audited like any other look at who did what."""
    try:
        criteria = parse_criteria(**typed_filter(request))
    except AuditFilterRejected as exc:
        reasons = "\n".join(f"{name}: {why}" for name, why in exc.problems.items())
        return Response(f"bad filter:\n{reasons}\n", status_code=400, media_type="text/plain")
    stamp = gateway_of(request).clock.now().strftime("%Y%m%dT%H%M%SZ")
    chunks = audit_queries(request).export_csv(criteria, admin.username, client_of(request))
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="twofa-audit-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )

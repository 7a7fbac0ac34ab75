"""Admin console: the Status page, `twofa doctor` behind a button. The checks reach out to
Duo, the mail server, Redis and the directories, so they run on a POST with the CSRF token,
never on a GET a browser might prefetch; the checks themselves live in `services.doctor`."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from twofa.services.doctor import Finding, examine, failed_parts
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import gateway_of
from twofa.web.templating import render

PAGE_URL: Final = "/admin/status"

router = APIRouter(prefix=PAGE_URL)


def _page(request: Request, admin: Admin, findings: list[Finding] | None) -> Response:
    return render(
        request,
        "admin/status.html",
        title="Status",
        active_tab="Overview",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        findings=findings,
        failed=failed_parts(findings or []),
    )


@router.get("")
async def status_page(request: Request, admin: SignedInAdmin) -> Response:
    return _page(request, admin, None)


@router.post("")
async def run_checks(request: Request, admin: SignedInAdmin) -> Response:
    return _page(request, admin, await examine(gateway_of(request)))

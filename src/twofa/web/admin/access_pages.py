"""The console's Access Rules page: the protected domains and their rules as the settings file
defines them (read-only here: they live in the file so every node and every deployment tool
sees the same), and a tester that says which rule decides a URL for a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from twofa.services.forward_auth import Explanation, UnknownUser
from twofa.web.admin.guard import Admin, require_admin
from twofa.web.context import gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")
SignedInAdmin = Annotated[Admin, Depends(require_admin)]


@router.get("/access")
async def access_rules(
    request: Request,
    admin: SignedInAdmin,
    url: str = "",
    user: str = "",
    ip: str = "203.0.113.1",
) -> Response:
    gateway = gateway_of(request)
    explanation: Explanation | None = None
    problem = None
    if url:
        try:
            explanation = await gateway.forward_auth.explain(user.strip() or None, url, ip)
        except UnknownUser as exc:
            problem = str(exc)
    return render(
        request,
        "admin/access.html",
        title="Access Rules",
        active_tab="Access Rules",
        admin_name=admin.username,
        access=gateway.settings.access,
        url=url,
        user=user,
        ip=ip,
        explanation=explanation,
        problem=problem,
    )

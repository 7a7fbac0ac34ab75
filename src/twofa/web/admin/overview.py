"""The console's Overview page: how many users 2FA protects and how many still have to set it
up, what happened in the last 24 hours, whose pushes are paused after a fraud report, which
usernames are under a distributed password attack, and which Duo application the gateway
uses."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from starlette.responses import Response

from twofa.services.admin.audit_query import datetime_local
from twofa.services.duo.push_fatigue import FATIGUE_KIND, utc_time
from twofa.services.signin.attack_alerts import ATTACK_KIND, ATTACK_OUTCOME
from twofa.web.admin.guard import SignedInAdmin
from twofa.web.context import gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")


@router.get("")
@router.get("/")
async def overview(request: Request, admin: SignedInAdmin) -> Response:
    gateway = gateway_of(request)
    figures = await gateway.overview.overview()
    since, now = datetime_local(figures.activity.since), gateway.clock.now()

    def audit_link(kind: str, outcome: str = "") -> str:
        """The Audit Log filtered to the events behind one figure."""
        params = {"kind": kind, "outcome": outcome, "since": since}
        return "/admin/audit?" + urllib.parse.urlencode({k: v for k, v in params.items() if v})

    return render(
        request,
        "admin/overview.html",
        title="Overview",
        active_tab="Overview",
        admin_name=admin.username,
        figures=figures,
        paused=[(user.username, utc_time(user.until, now)) for user in figures.paused],
        links={
            "sign_ins": audit_link("login", "password_ok"),
            "denied_pushes": audit_link("duo_push"),
            "failmode": audit_link("failmode"),
            "duo_errors": audit_link("duo_error"),
            "fraud_reports": audit_link(FATIGUE_KIND, "paused"),
            "sign_in_attacks": audit_link(ATTACK_KIND, ATTACK_OUTCOME),
        },
    )

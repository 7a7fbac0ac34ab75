"""The console's Access Rules page: the protected domains, the settings file's rules (read-only:
the operator's pinned baseline, evaluated first), the console's rules with add, edit, delete
and move up/down (evaluated next, in their order), and a tester that says which rule decides a
URL for a user. Handlers read forms and render; the rules live in `AccessRuleService`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import APIRouter, Path, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.config import ACCESS_POLICIES
from twofa.services.access.forward_auth import Explanation, UncheckablePath, UnknownUser
from twofa.services.access.rules import ConsoleRule, RuleEdit, UnknownAccessRule
from twofa.services.settings.console import SettingsRejected
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ACCESS_URL: Final = "/admin/access"
LIST_FIELDS: Final = ("domains", "paths", "users", "groups", "networks")
NOTICES: Final = {
    "added": "Rule added. Every node applies it within about a second.",
    "saved": "Rule saved. Every node applies it within about a second.",
    "deleted": "Rule deleted.",
    "moved": "Rule moved.",
}
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class RuleForm:
    """The rule form as typed (lists as text), so a rejected form comes back unchanged."""

    domains: str = ""
    paths: str = ""
    users: str = ""
    groups: str = ""
    networks: str = ""
    policy: str = "two_factor"

    @classmethod
    def typed(cls, form: FormData) -> RuleForm:
        values = {name: form.get(name) for name in (*LIST_FIELDS, "policy")}
        return cls(**{k: v.strip() for k, v in values.items() if isinstance(v, str)})

    @classmethod
    def of(cls, rule: ConsoleRule) -> RuleForm:
        written = rule.rule
        return cls(
            domains=", ".join(written.domain),
            paths=", ".join(written.resources),
            users=", ".join(written.users),
            groups=", ".join(written.groups),
            networks=", ".join(str(network) for network in written.networks),
            policy=written.policy,
        )

    def edit(self) -> RuleEdit:
        def split(text: str) -> tuple[str, ...]:
            return tuple(part for part in _SEPARATORS.split(text) if part)

        return RuleEdit(
            domains=split(self.domains),
            policy=self.policy,
            paths=split(self.paths),
            users=split(self.users),
            groups=split(self.groups),
            networks=split(self.networks),
        )


async def _page(
    request: Request,
    admin: Admin,
    *,
    form: RuleForm | None = None,
    editing: ConsoleRule | None = None,
    problems: dict[str, str] | None = None,
    url: str = "",
    user: str = "",
    ip: str = "203.0.113.1",
) -> Response:
    gateway = gateway_of(request)
    explanation: Explanation | None = None
    tester_problem = None
    if url:
        try:
            explanation = await gateway.forward_auth.explain(user.strip() or None, url, ip)
        except (UnknownUser, UncheckablePath) as exc:
            tester_problem = str(exc)
    return render(
        request,
        "admin/access.html",
        status_code=400 if problems else 200,
        title="Access Rules",
        active_tab="Access Rules",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        access=gateway.settings.access,
        console_rules=await gateway.access_rules.console_rules(),
        policies=ACCESS_POLICIES,
        form=form or RuleForm(),
        editing=editing,
        problems=problems or {},
        notice=NOTICES.get(request.query_params.get("done", "")),
        url=url,
        user=user,
        ip=ip,
        explanation=explanation,
        tester_problem=tester_problem,
    )


@router.get("/access")
async def access_rules(
    request: Request,
    admin: SignedInAdmin,
    url: str = "",
    user: str = "",
    ip: str = "203.0.113.1",
) -> Response:
    return await _page(request, admin, url=url, user=user, ip=ip)


@router.post("/access/rules")
async def add_rule(request: Request, admin: SignedInAdmin) -> Response:
    form = RuleForm.typed(await request.form())
    service = gateway_of(request).access_rules
    try:
        await service.add(form.edit(), admin.username, client_of(request))
    except SettingsRejected as rejected:
        return await _page(request, admin, form=form, problems=rejected.problems)
    return RedirectResponse(f"{ACCESS_URL}?done=added#console-rules", status_code=303)


async def _console_rule(request: Request, rule_id: int) -> ConsoleRule:
    for rule in await gateway_of(request).access_rules.console_rules():
        if rule.id == rule_id:
            return rule
    raise UnknownAccessRule(rule_id)


@router.get("/access/rules/{rule_id}")
async def edit_rule_page(request: Request, admin: SignedInAdmin, rule_id: RuleId) -> Response:
    rule = await _console_rule(request, rule_id)
    return await _page(request, admin, form=RuleForm.of(rule), editing=rule)


@router.post("/access/rules/{rule_id}")
async def save_rule(request: Request, admin: SignedInAdmin, rule_id: RuleId) -> Response:
    form = RuleForm.typed(await request.form())
    service = gateway_of(request).access_rules
    try:
        await service.update(rule_id, form.edit(), admin.username, client_of(request))
    except SettingsRejected as rejected:
        editing = await _console_rule(request, rule_id)
        return await _page(request, admin, form=form, editing=editing, problems=rejected.problems)
    return RedirectResponse(f"{ACCESS_URL}?done=saved#console-rules", status_code=303)


@router.post("/access/rules/{rule_id}/delete")
async def delete_rule(request: Request, admin: SignedInAdmin, rule_id: RuleId) -> Response:
    await gateway_of(request).access_rules.remove(rule_id, admin.username, client_of(request))
    return RedirectResponse(f"{ACCESS_URL}?done=deleted#console-rules", status_code=303)


@router.post("/access/rules/{rule_id}/move")
async def move_rule(request: Request, admin: SignedInAdmin, rule_id: RuleId) -> Response:
    position = (await request.form()).get("position")
    if not isinstance(position, str) or not position.isdigit():
        return RedirectResponse(ACCESS_URL, status_code=303)
    service = gateway_of(request).access_rules
    await service.move(rule_id, int(position), admin.username, client_of(request))
    return RedirectResponse(f"{ACCESS_URL}?done=moved#console-rules", status_code=303)

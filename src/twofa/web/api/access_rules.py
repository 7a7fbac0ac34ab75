"""/api/v1/access/rules: the console's access rules (list, add, replace, remove), each change
audited as the token. The settings file's rules are listed read-only: they are evaluated first,
then the console's in their order, then the default policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from twofa.services.access.rules import MAX_ITEMS, ConsoleRule, RuleEdit, rule_fields
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import Name150, RequestModel, Text100, Text300

router = APIRouter(
    prefix="/access/rules",
    tags=["access"],
    route_class=ApiRoute,
    responses=error_responses(401, 422),
)
REJECTED = error_responses(400)
UNKNOWN_RULE = error_responses(404)
PolicyName = Literal["bypass", "one_factor", "two_factor", "deny"]
RuleId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The console rule's id.")]
Position = Annotated[int, Field(ge=1, le=10_000)]


class AccessRuleFields(BaseModel):
    domains: list[str] = Field(description="Protected domains or *.domain patterns it covers.")
    policy: PolicyName
    paths: list[str] = Field(description="Path patterns (/rest/*); empty: every path.")
    users: list[str] = Field(description="Only for these users (with groups: either).")
    groups: list[str] = Field(description="Only for members of these groups.")
    networks: list[str] = Field(description="Only from these client networks.")


class FileRuleOut(AccessRuleFields):
    position: int = Field(description="Its place in the settings file (evaluated first).")


class ConsoleRuleOut(AccessRuleFields):
    id: int
    position: int = Field(description="Its place among the console's rules.")
    created_at: datetime
    updated_at: datetime
    updated_by: str


class AccessRulesOut(BaseModel):
    default_policy: PolicyName = Field(description="Decides when no rule matches.")
    file_rules: list[FileRuleOut] = Field(description="From the settings file; read-only here.")
    console_rules: list[ConsoleRuleOut]


class AccessRuleIn(RequestModel):
    domains: Annotated[list[Text300], Field(min_length=1, max_length=MAX_ITEMS)] = Field(
        description="Protected domains ([access] domains) or *.domain patterns under them."
    )
    policy: PolicyName
    paths: Annotated[list[Text300], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list, description="Path patterns such as /rest/*; empty: every path."
    )
    users: Annotated[list[Name150], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    groups: Annotated[list[Name150], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    networks: Annotated[list[Text100], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list, description="Client networks such as 10.0.0.0/8."
    )
    position: Position | None = Field(
        default=None,
        description="Its place among the console's rules (default: last, or where it is).",
    )

    def edit(self) -> RuleEdit:
        return RuleEdit(
            domains=tuple(self.domains),
            policy=self.policy,
            paths=tuple(self.paths),
            users=tuple(self.users),
            groups=tuple(self.groups),
            networks=tuple(self.networks),
        )


def console_rule_out(rule: ConsoleRule) -> ConsoleRuleOut:
    return ConsoleRuleOut.model_validate(
        {
            **rule_fields(rule.rule),
            "id": rule.id,
            "position": rule.position,
            "created_at": rule.created_at,
            "updated_at": rule.updated_at,
            "updated_by": rule.updated_by,
        }
    )


@router.get("", summary="Every access rule: the settings file's, then the console's")
async def list_rules(api: Api) -> AccessRulesOut:
    service = api.gateway.access_rules
    file_rules = [
        FileRuleOut.model_validate({**rule_fields(rule), "position": index + 1})
        for index, rule in enumerate(service.file_rules)
    ]
    return AccessRulesOut.model_validate(
        {
            "default_policy": api.gateway.settings.access.default_policy,
            "file_rules": file_rules,
            "console_rules": [console_rule_out(r) for r in await service.console_rules()],
        }
    )


@router.post("", summary="Add a console rule", status_code=201, responses=REJECTED)
async def add_rule(api: Api, body: AccessRuleIn) -> ConsoleRuleOut:
    saved = await api.gateway.access_rules.add(body.edit(), api.actor, api.client, body.position)
    return console_rule_out(saved)


@router.put(
    "/{rule_id}",
    summary="Replace a console rule (and move it, with position)",
    responses={**REJECTED, **UNKNOWN_RULE},
)
async def put_rule(api: Api, rule_id: RuleId, body: AccessRuleIn) -> ConsoleRuleOut:
    saved = await api.gateway.access_rules.update(
        rule_id, body.edit(), api.actor, api.client, body.position
    )
    return console_rule_out(saved)


@router.delete(
    "/{rule_id}", summary="Remove a console rule", status_code=204, responses=UNKNOWN_RULE
)
async def delete_rule(api: Api, rule_id: RuleId) -> Response:
    await api.gateway.access_rules.remove(rule_id, api.actor, api.client)
    return Response(status_code=204)

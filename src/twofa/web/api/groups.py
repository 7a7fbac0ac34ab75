"""/api/v1/groups: list and create groups, add and remove members, and the per-group 2FA
switch, each audited as the token."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from twofa.services.admin.accounts import GroupSummary
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses, not_found
from twofa.web.api.models import GroupPath, Name150, RequestModel, SwitchIn, UsernamePath

router = APIRouter(
    prefix="/groups", tags=["groups"], route_class=ApiRoute, responses=error_responses(401, 422)
)
UNKNOWN_NAME = error_responses(404)


class GroupOut(BaseModel):
    name: str
    twofa_enabled: bool = Field(description="Every member is asked for a second factor.")
    members: list[str]


class GroupIn(RequestModel):
    name: Name150


class MembershipOut(BaseModel):
    group: str
    username: str
    member: bool
    changed: bool = Field(description="false when the membership already was as asked.")


def group_out(summary: GroupSummary) -> GroupOut:
    return GroupOut(
        name=summary.name, twofa_enabled=summary.twofa_enabled, members=list(summary.members)
    )


async def find_group(api: Api, name: str) -> GroupOut:
    for summary in await api.accounts.groups():
        if summary.name == name:
            return group_out(summary)
    raise not_found(f"no group {name!r}")


@router.get("", summary="Every group with its members")
async def list_groups(api: Api) -> list[GroupOut]:
    return [group_out(summary) for summary in await api.accounts.groups()]


@router.get("/{group}", summary="One group", responses=UNKNOWN_NAME)
async def get_group(api: Api, group: GroupPath) -> GroupOut:
    return await find_group(api, group)


@router.post("", summary="Create a group", status_code=201, responses=error_responses(409))
async def create_group(api: Api, body: GroupIn) -> GroupOut:
    await api.accounts.add_group(body.name, client=api.client)
    return await find_group(api, body.name.strip())


@router.put(
    "/{group}/members/{username}", summary="Add a user to the group", responses=UNKNOWN_NAME
)
async def add_member(api: Api, group: GroupPath, username: UsernamePath) -> MembershipOut:
    changed = await api.accounts.set_membership(group, username, True, client=api.client)
    return MembershipOut(group=group, username=username, member=True, changed=changed)


@router.delete(
    "/{group}/members/{username}", summary="Remove a user from the group", responses=UNKNOWN_NAME
)
async def remove_member(api: Api, group: GroupPath, username: UsernamePath) -> MembershipOut:
    changed = await api.accounts.set_membership(group, username, False, client=api.client)
    return MembershipOut(group=group, username=username, member=False, changed=changed)


@router.put(
    "/{group}/twofa", summary="Switch 2FA on or off for every member", responses=UNKNOWN_NAME
)
async def set_group_twofa(api: Api, group: GroupPath, body: SwitchIn) -> GroupOut:
    await api.accounts.set_group_policy(group, body.enabled, client=api.client)
    return await find_group(api, group)

"""/api/v1/users: search, create, enable and disable, delete, reset the second factor, unlock,
and the per-user 2FA switch. Each change is one `AccountService` call, audited as the token;
users are shown as the console shows them (`ConsoleUsersService`), status in words included."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from twofa.services.admin.console_users import UserStatus
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses, not_found
from twofa.web.api.models import (
    Email,
    Limit,
    NewUsername,
    Offset,
    Password,
    RequestModel,
    SwitchIn,
    Text200,
    Text300,
    UsernamePath,
)

router = APIRouter(
    prefix="/users", tags=["users"], route_class=ApiRoute, responses=error_responses(401, 422)
)
UNKNOWN_USER = error_responses(404)


class UserOut(BaseModel):
    """A user as the console's User Management shows them."""

    username: str
    display_name: str
    email: str
    enabled: bool
    is_admin: bool
    groups: list[str]
    twofa_enabled: bool = Field(description="The user's own 2FA switch, whatever the groups say.")
    twofa_required: bool = Field(
        description="Whether sign-in asks for a second factor: the user's switch, a group's "
        "or the enforcement scope everyone."
    )
    status: list[str] = Field(
        description='The status in words, e.g. ["required — via group engineering", '
        '"enrolled: Duo Push"].'
    )
    locked_until: datetime | None = Field(
        description="While set, sign-in is refused after too many failures."
    )


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    offset: int
    limit: int


class UserIn(RequestModel):
    username: NewUsername
    password: Password | None = Field(
        default=None, description="Leave out to create the account without a password."
    )
    display_name: Text200 = ""
    email: Email = ""
    is_admin: bool = False


class UserPatch(RequestModel):
    enabled: bool | None = Field(default=None, description="false refuses every sign-in.")
    is_admin: bool | None = Field(
        default=None,
        description="Grant or take away the admin role (granting needs a token with every "
        "scope); taken away, the user's API tokens stop.",
    )
    password: Password | None = Field(default=None, description="Ends the user's sessions.")


class UnlockOut(BaseModel):
    was_locked: bool


def user_out(status: UserStatus) -> UserOut:
    return UserOut(
        username=status.username,
        display_name=status.display_name,
        email=status.email,
        enabled=status.enabled,
        is_admin=status.is_admin,
        groups=list(status.groups),
        twofa_enabled=status.twofa_switched_on,
        twofa_required=status.required,
        status=list(status.explanation),
        locked_until=status.locked_until,
    )


async def find_user(api: Api, username: str) -> UserOut:
    status = await api.user_statuses.status(username)
    if status is None:
        raise not_found(f"no user {username!r}")
    return user_out(status)


@router.get("", summary="Search users")
async def search_users(
    api: Api,
    q: Annotated[Text300, Query(description="Part of a username, name or e-mail.")] = "",
    offset: Offset = 0,
    limit: Limit = 50,
) -> UserPage:
    statuses, total = await api.user_statuses.search(q, offset=offset, limit=limit)
    return UserPage(items=list(map(user_out, statuses)), total=total, offset=offset, limit=limit)


@router.get("/{username}", summary="One user", responses=UNKNOWN_USER)
async def get_user(api: Api, username: UsernamePath) -> UserOut:
    return await find_user(api, username)


@router.post("", summary="Create a local user", status_code=201, responses=error_responses(409))
async def create_user(api: Api, body: UserIn) -> UserOut:
    if body.is_admin:
        await api.require_every_scope("making an admin")
    await api.accounts.add_user(
        body.username,
        body.password,
        display_name=body.display_name,
        email=body.email,
        is_admin=body.is_admin,
        client=api.client,
    )
    return await find_user(api, body.username)


@router.patch(
    "/{username}",
    summary="Enable, disable, grant or take away admin, or set a password",
    responses=UNKNOWN_USER,
)
async def patch_user(api: Api, username: UsernamePath, body: UserPatch) -> UserOut:
    await api.require_every_scope_over(username, "a change")
    if body.is_admin:
        await api.require_every_scope("making an admin")
    if body.is_admin is not None:
        await api.accounts.set_admin(username, body.is_admin, client=api.client)
    if body.enabled is not None:
        await api.accounts.set_enabled(username, body.enabled, client=api.client)
    if body.password is not None:
        await api.accounts.set_password(username, body.password, client=api.client)
    return await find_user(api, username)


@router.delete(
    "/{username}", summary="Delete a local user", status_code=204, responses=UNKNOWN_USER
)
async def delete_user(api: Api, username: UsernamePath) -> Response:
    await api.require_every_scope_over(username, "deleting the account")
    await api.accounts.delete_user(username, client=api.client)
    return Response(status_code=204)


@router.post(
    "/{username}/reset-2fa",
    summary="Forget the user's second factor; they set it up again at the next sign-in",
    responses=UNKNOWN_USER,
)
async def reset_second_factor(api: Api, username: UsernamePath) -> UserOut:
    await api.require_every_scope_over(username, "a 2FA reset")
    await api.accounts.reset_second_factor(username, client=api.client)
    return await find_user(api, username)


@router.post(
    "/{username}/forget-devices",
    summary="Make every remembered device of the user ask for a second factor again",
    responses=UNKNOWN_USER,
)
async def forget_devices(api: Api, username: UsernamePath) -> UserOut:
    await api.require_every_scope_over(username, "forgetting the devices")
    await api.accounts.forget_devices(username, client=api.client)
    return await find_user(api, username)


@router.post(
    "/{username}/end-sessions",
    summary="Sign the user out of every browser, on every gateway node",
    responses=UNKNOWN_USER,
)
async def end_sessions(api: Api, username: UsernamePath) -> UserOut:
    await api.require_every_scope_over(username, "ending the sessions")
    await api.accounts.end_sessions(username, client=api.client)
    return await find_user(api, username)


@router.post("/{username}/unlock", summary="End a sign-in lock-out", responses=UNKNOWN_USER)
async def unlock_user(api: Api, username: UsernamePath) -> UnlockOut:
    return UnlockOut(was_locked=await api.accounts.unlock_user(username, client=api.client))


@router.put(
    "/{username}/twofa", summary="Switch 2FA on or off for the user", responses=UNKNOWN_USER
)
async def set_user_twofa(api: Api, username: UsernamePath, body: SwitchIn) -> UserOut:
    await api.accounts.set_user_policy(username, body.enabled, client=api.client)
    return await find_user(api, username)

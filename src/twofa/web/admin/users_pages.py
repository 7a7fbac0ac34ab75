"""The console's User Management tab: users and groups, a page at a time, with each user's
2FA status in words and the actions an admin takes on them. Every action is a POST with the
CSRF token, done by `AccountService` (one transaction with its audit record), then a redirect
back to the list with a notice; bad input comes back next to its field."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import RedirectResponse, Response

from twofa.domain.account_input import (
    MAX_DISPLAY_NAME_LENGTH,
    MAX_EMAIL_LENGTH,
    AccountError,
    group_name_problem,
    username_problem,
)
from twofa.domain.client import ClientInfo
from twofa.services.admin.accounts import AccountService
from twofa.services.admin.console_users import (
    MAX_CSV_BYTES,
    BulkEnableRejected,
    ConsoleUsersService,
)
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.admin.listing import Pager, fetch_page, page_number
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin")

USERS_PER_PAGE: Final = 20
GROUPS_PER_PAGE: Final = 20
TAB: Final = "User Management"
NOTICES: Final = {
    "user_added": "Added user {who}.",
    "policy_on": "2FA switched on for {who}.",
    "policy_off": "2FA switched off for {who} (a group may still require it).",
    "reset": "Second factor reset for {who}: they set it up again at their next sign-in.",
    "devices_forgotten": "Every remembered device of {who} asks for a second factor again.",
    "sessions_ended": "{who} is signed out everywhere.",
    "unlocked": "Unlocked {who}.",
    "not_locked": "{who} was not locked; any failed attempts were forgotten.",
    "account_on": "Account {who} enabled.",
    "account_off": "Account {who} disabled; their sessions were ended.",
    "deleted": "Deleted user {who}.",
    "bulk": "2FA switched on for the users in the file: {who}.",
    "group_added": "Added group {who}.",
    "group_on": "2FA switched on for group {who}.",
    "group_off": "2FA switched off for group {who}.",
}


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def back_to(path: str, form: FormData, done: str, who: str) -> RedirectResponse:
    """Back to the list the admin came from (same search and page), with a notice."""
    params = {"q": field(form, "q"), "page": field(form, "page"), "done": done, "who": who}
    query = urllib.parse.urlencode({name: value for name, value in params.items() if value})
    return RedirectResponse(f"{path}?{query}", status_code=303)


def notice_from(request: Request) -> str | None:
    template = NOTICES.get(request.query_params.get("done", ""))
    return template.format(who=request.query_params.get("who", "")) if template else None


def accounts_for(request: Request, admin: Admin) -> AccountService:
    return gateway_of(request).accounts.acting_as(admin.username)


def console_users(request: Request) -> ConsoleUsersService:
    return gateway_of(request).console_users


async def users_page(
    request: Request,
    admin: Admin,
    *,
    q: str = "",
    page: int = 1,
    status_code: int = 200,
    **context: Any,
) -> Response:
    search = console_users(request).search
    users, total, page = await fetch_page(
        lambda offset, limit: search(q, offset=offset, limit=limit), page, USERS_PER_PAGE
    )
    pager = Pager(page, USERS_PER_PAGE, total, "/admin/users", (("q", q),))
    context.setdefault("problems", {})
    context.setdefault("new_user", {})
    context.setdefault("notice", notice_from(request))
    return render(
        request,
        "admin/users.html",
        status_code=status_code,
        title=TAB,
        active_tab=TAB,
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        users=users,
        pager=pager,
        q=q,
        page=page,
        max_csv_bytes=MAX_CSV_BYTES,
        **context,
    )


@router.get("/users")
async def list_users(request: Request, admin: SignedInAdmin) -> Response:
    params = request.query_params
    return await users_page(
        request, admin, q=params.get("q", ""), page=page_number(params.get("page"))
    )


def new_user_problems(
    username: str, display_name: str, email: str, password: str
) -> dict[str, str]:
    problems = {"username": username_problem(username) or ""}
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        problems["display_name"] = f"at most {MAX_DISPLAY_NAME_LENGTH} characters"
    if len(email) > MAX_EMAIL_LENGTH:
        problems["email"] = f"at most {MAX_EMAIL_LENGTH} characters"
    elif email and ("@" not in email or any(c.isspace() for c in email)):
        problems["email"] = "not an e-mail address"
    if not password:
        problems["password"] = "a password is required"  # noqa: S105
    return {name: why for name, why in problems.items() if why}


@router.post("/users/add")
async def add_user(request: Request, admin: SignedInAdmin) -> Response:
    form = await request.form()
    username, password = field(form, "username").strip(), field(form, "password")
    display_name, email = field(form, "display_name").strip(), field(form, "email").strip()
    problems = new_user_problems(username, display_name, email, password)
    if not problems:
        try:
            await accounts_for(request, admin).add_user(
                username,
                password,
                display_name=display_name,
                email=email,
                client=client_of(request),
            )
            return back_to("/admin/users", form, "user_added", username)
        except AccountError as exc:  # a refused password names its field; the rest, the name
            problems.update(exc.fields or {"username": str(exc)})
    new_user = {"username": username, "display_name": display_name, "email": email}
    return await users_page(
        request, admin, status_code=400, problems=problems, new_user=new_user, add_open=True
    )


async def user_action(request: Request, admin: Admin) -> tuple[FormData, str, AccountService]:
    form = await request.form()
    return form, field(form, "username"), accounts_for(request, admin)


async def refused(request: Request, admin: Admin, form: FormData, message: str) -> Response:
    return await users_page(
        request,
        admin,
        q=field(form, "q"),
        page=page_number(field(form, "page")),
        status_code=400,
        error=message,
    )


async def act_on_user(
    request: Request,
    admin: Admin,
    act: Callable[[AccountService, str, ClientInfo], Awaitable[object]],
    done: Callable[[object], str],
) -> Response:
    """One admin action on the user the form names: done, back to the list with the notice
    `done(result)`; refused by the service, the list again with its message."""
    form, username, accounts = await user_action(request, admin)
    try:
        result = await act(accounts, username, client_of(request))
    except AccountError as exc:
        return await refused(request, admin, form, str(exc))
    return back_to("/admin/users", form, done(result), username)


def _always(notice: str) -> Callable[[object], str]:
    return lambda _: notice


@router.post("/users/policy")
async def set_user_policy(request: Request, admin: SignedInAdmin) -> Response:
    enabled = field(await request.form(), "enabled") == "1"
    return await act_on_user(
        request,
        admin,
        lambda accounts, username, client: accounts.set_user_policy(username, enabled, client),
        _always("policy_on" if enabled else "policy_off"),
    )


@router.post("/users/reset-2fa")
async def reset_second_factor(request: Request, admin: SignedInAdmin) -> Response:
    return await act_on_user(request, admin, AccountService.reset_second_factor, _always("reset"))


@router.post("/users/forget-devices")
async def forget_devices(request: Request, admin: SignedInAdmin) -> Response:
    return await act_on_user(
        request, admin, AccountService.forget_devices, _always("devices_forgotten")
    )


@router.post("/users/end-sessions")
async def end_sessions(request: Request, admin: SignedInAdmin) -> Response:
    return await act_on_user(request, admin, AccountService.end_sessions, _always("sessions_ended"))


@router.post("/users/unlock")
async def unlock_user(request: Request, admin: SignedInAdmin) -> Response:
    return await act_on_user(
        request,
        admin,
        AccountService.unlock_user,
        lambda was_locked: "unlocked" if was_locked else "not_locked",
    )


@router.post("/users/account")
async def set_account_enabled(request: Request, admin: SignedInAdmin) -> Response:
    form = await request.form()
    enabled = field(form, "enabled") == "1"
    if not enabled and field(form, "username") == admin.username:
        return await refused(request, admin, form, "You cannot disable your own account.")
    return await act_on_user(
        request,
        admin,
        lambda accounts, username, client: accounts.set_enabled(username, enabled, client),
        _always("account_on" if enabled else "account_off"),
    )


@router.get("/users/delete")
async def confirm_delete(request: Request, admin: SignedInAdmin) -> Response:
    """The confirmation step: deleting cannot be undone, so it takes a second click."""
    username = request.query_params.get("username", "")
    user = await console_users(request).status(username)
    if user is None:
        return await users_page(request, admin, status_code=404, error=f"No user {username!r}.")
    return render(
        request,
        "admin/user_delete.html",
        title=f"Delete {username}",
        active_tab=TAB,
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        user=user,
        own_account=username == admin.username,
        q=request.query_params.get("q", ""),
        page=page_number(request.query_params.get("page")),
    )


@router.post("/users/delete")
async def delete_user(request: Request, admin: SignedInAdmin) -> Response:
    form, username, accounts = await user_action(request, admin)
    if username == admin.username:
        return await refused(request, admin, form, "You cannot delete your own account.")
    if field(form, "confirm") != "yes":
        query = urllib.parse.urlencode({"username": username})
        return RedirectResponse(f"/admin/users/delete?{query}", status_code=303)
    try:
        await accounts.delete_user(username, client_of(request))
    except AccountError as exc:
        return await refused(request, admin, form, str(exc))
    return back_to("/admin/users", form, "deleted", username)


@router.post("/users/bulk-enable")
async def bulk_enable(request: Request, admin: SignedInAdmin) -> Response:
    """2FA on for every user a CSV file lists: the whole file is checked first, and one bad
    line (an unknown user, a missing name) means nothing changes."""
    form = await request.form()
    upload = form.get("file")
    content = await upload.read(MAX_CSV_BYTES + 1) if isinstance(upload, UploadFile) else b""
    if not content:
        lines = ["choose a CSV file with a username column"]
        return await users_page(request, admin, status_code=400, csv_problems=lines)
    try:
        result = await console_users(request).enable_from_csv(
            content, admin.username, client_of(request)
        )
    except BulkEnableRejected as exc:
        lines = [f"line {p.line}: {p.message}" if p.line else p.message for p in exc.problems]
        return await users_page(request, admin, status_code=400, csv_problems=lines)
    summary = f"{len(result.switched_on)} switched on, {len(result.already_on)} already on"
    return back_to("/admin/users", form, "bulk", summary)


async def groups_page(
    request: Request,
    admin: Admin,
    *,
    q: str = "",
    page: int = 1,
    status_code: int = 200,
    **context: Any,
) -> Response:
    search = console_users(request).groups
    groups, total, page = await fetch_page(
        lambda offset, limit: search(q, offset=offset, limit=limit), page, GROUPS_PER_PAGE
    )
    context.setdefault("notice", notice_from(request))
    return render(
        request,
        "admin/groups.html",
        status_code=status_code,
        title=f"{TAB}: groups",
        active_tab=TAB,
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        groups=groups,
        pager=Pager(page, GROUPS_PER_PAGE, total, "/admin/groups", (("q", q),)),
        q=q,
        page=page,
        **context,
    )


@router.get("/groups")
async def list_groups(request: Request, admin: SignedInAdmin) -> Response:
    params = request.query_params
    return await groups_page(
        request, admin, q=params.get("q", ""), page=page_number(params.get("page"))
    )


@router.post("/groups/add")
async def add_group(request: Request, admin: SignedInAdmin) -> Response:
    form = await request.form()
    name = field(form, "name").strip()
    problem = group_name_problem(name)
    if problem is None:
        try:
            await accounts_for(request, admin).add_group(name, client_of(request))
            return back_to("/admin/groups", form, "group_added", name)
        except AccountError as exc:
            problem = str(exc)
    return await groups_page(
        request, admin, status_code=400, name_problem=problem, new_group_name=name
    )


@router.post("/groups/policy")
async def set_group_policy(request: Request, admin: SignedInAdmin) -> Response:
    form = await request.form()
    name, enabled = field(form, "name"), field(form, "enabled") == "1"
    try:
        await accounts_for(request, admin).set_group_policy(name, enabled, client_of(request))
    except AccountError as exc:
        return await groups_page(
            request,
            admin,
            q=field(form, "q"),
            page=page_number(field(form, "page")),
            status_code=400,
            error=str(exc),
        )
    return back_to("/admin/groups", form, "group_on" if enabled else "group_off", name)

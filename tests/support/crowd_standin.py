"""A stand-in for Atlassian Crowd's usermanagement REST API as Crowd, Jira and Confluence serve
it to trusted applications: the password check and the nested-group listing over an in-memory
table of users and nested groups, plus hooks a test sets on the Python object (never over HTTP)
to make it fail or answer slowly."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

API_PATH = "/rest/usermanagement/1"
DEFAULT_MAX_RESULTS = 1000


@dataclass
class StandInUser:
    name: str
    password: str
    display_name: str
    email: str
    active: bool
    direct_groups: set[str]


@dataclass(frozen=True)
class ReceivedRequest:
    """What reached the stand-in, decoded the way Crowd's resources would see it."""

    method: str
    path: str
    query: dict[str, str]
    accept: str
    authorization: str | None


@dataclass
class CrowdStandIn:
    """Users and groups are matched without regard to case, as Crowd does, and answered in
    the spelling they were added with. `context_path` is where Crowd is deployed ("/crowd");
    Jira and Confluence serve the API at the root."""

    application_name: str = "twofa"
    application_password: str = "application-secret"
    context_path: str = ""
    users: dict[str, StandInUser] = field(default_factory=dict)
    # group name (folded) -> (spelling, the groups it is a member of, folded)
    groups: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    received: list[ReceivedRequest] = field(default_factory=list)
    failure_status: int | None = None
    delay_s: float = 0.0
    _release_slowed: threading.Event = field(default_factory=threading.Event, repr=False)

    # --- the directory -------------------------------------------------------------------
    def add_group(self, name: str, *, member_of: tuple[str, ...] = ()) -> None:
        """A group, or more nesting for an existing one: `member_of` makes its members
        members of those groups too."""
        for parent in member_of:
            if parent.casefold() not in self.groups:
                self.add_group(parent)
        spelling, parents = self.groups.get(name.casefold(), (name, set()))
        self.groups[name.casefold()] = (spelling, parents | {p.casefold() for p in member_of})

    def add_user(
        self,
        name: str,
        password: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        active: bool = True,
        groups: tuple[str, ...] = (),
    ) -> None:
        for group in groups:
            if group.casefold() not in self.groups:
                self.add_group(group)
        self.users[name.casefold()] = StandInUser(
            name=name,
            password=password,
            display_name=display_name if display_name is not None else name,
            email=email if email is not None else f"{name}@example.test",
            active=active,
            direct_groups={group.casefold() for group in groups},
        )

    def nested_groups(self, user: StandInUser) -> list[str]:
        """Every group the user is in directly or through nesting, sorted like Crowd."""
        reached: set[str] = set()
        pending = list(user.direct_groups)
        while pending:
            group = pending.pop()
            if group in reached or group not in self.groups:
                continue
            reached.add(group)
            pending.extend(self.groups[group][1])
        return sorted((self.groups[group][0] for group in reached), key=str.casefold)

    # --- test hooks ----------------------------------------------------------------------
    def fail_with(self, status: int) -> None:
        """Every request gets `status` with an HTML error page, as a broken server sends."""
        self.failure_status = status

    def slow_down(self, seconds: float) -> None:
        """Every request waits `seconds` before it is answered (cut short by `reset_hooks`)."""
        self._release_slowed = threading.Event()
        self.delay_s = seconds

    def reset_hooks(self) -> None:
        self.failure_status = None
        self.delay_s = 0.0
        self._release_slowed.set()

    def reset(self) -> None:
        self.reset_hooks()
        self.users.clear()
        self.groups.clear()
        self.received.clear()

    # --- HTTP ----------------------------------------------------------------------------
    @property
    def app(self) -> Starlette:
        base = self.context_path.rstrip("/") + API_PATH
        return Starlette(
            routes=[
                Route(f"{base}/authentication", self._authentication, methods=["POST"]),
                Route(f"{base}/user/group/nested", self._nested_groups, methods=["GET"]),
            ]
        )

    async def _authentication(self, request: Request) -> Response:
        refusal = await self._refuse_or_stall(request)
        if refusal is not None:
            return refusal
        username = request.query_params.get("username", "")
        password = _password_from(await request.body())
        if not username or password is None:
            return _error(400, "ILLEGAL_ARGUMENT", "username and a password entity are required")
        user = self.users.get(username.casefold())
        if user is None:
            return _error(400, "USER_NOT_FOUND", f"User <{username}> does not exist")
        # Crowd checks the password before the active flag.
        if password != user.password:
            return _error(
                400,
                "INVALID_USER_AUTHENTICATION",
                "Failed to authenticate principal, password was invalid",
            )
        if not user.active:
            return _error(400, "INACTIVE_ACCOUNT", f"Account with name <{user.name}> is inactive")
        return JSONResponse(self._user_entity(request, user))

    async def _nested_groups(self, request: Request) -> Response:
        refusal = await self._refuse_or_stall(request)
        if refusal is not None:
            return refusal
        username = request.query_params.get("username", "")
        try:
            start_index = int(request.query_params.get("start-index", "0"))
            max_results = int(request.query_params.get("max-results", str(DEFAULT_MAX_RESULTS)))
        except ValueError:
            return _error(400, "ILLEGAL_ARGUMENT", "start-index and max-results are numbers")
        if start_index < 0 or max_results < 1:
            return _error(400, "ILLEGAL_ARGUMENT", "start-index >= 0 and max-results >= 1")
        user = self.users.get(username.casefold())
        if user is None:
            return _error(404, "USER_NOT_FOUND", f"User <{username}> does not exist")
        page = self.nested_groups(user)[start_index : start_index + max_results]
        root = str(request.base_url).rstrip("/") + self.context_path.rstrip("/") + API_PATH
        return JSONResponse(
            {
                "expand": "group",
                "groups": [
                    {
                        "link": {"href": f"{root}/group?groupname={name}", "rel": "self"},
                        "name": name,
                    }
                    for name in page
                ],
            }
        )

    async def _refuse_or_stall(self, request: Request) -> Response | None:
        """Records the request, applies the test hooks, then checks what Crowd checks before
        any resource runs: the application's credentials and the representation asked for."""
        self.received.append(
            ReceivedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                accept=request.headers.get("accept", ""),
                authorization=request.headers.get("authorization"),
            )
        )
        await self._wait_while_slowed()
        if self.failure_status is not None:
            return HTMLResponse(
                f"<html><body><h1>HTTP Status {self.failure_status}</h1></body></html>",
                status_code=self.failure_status,
            )
        if _basic_credentials(request) != (self.application_name, self.application_password):
            return PlainTextResponse(
                "Application failed to authenticate",
                status_code=401,
                headers={"WWW-Authenticate": 'BASIC realm="Crowd REST Service"'},
            )
        # Crowd would fall back to XML; refusing makes a client that forgets to ask for
        # JSON fail loudly here instead of on a parse error.
        if "application/json" not in request.headers.get("accept", ""):
            return PlainTextResponse("this stand-in only speaks JSON", status_code=406)
        return None

    async def _wait_while_slowed(self) -> None:
        if self.delay_s > 0:
            # `reset_hooks` sets the event from the test's thread and so releases a stalled
            # request at once, which lets the server shut down promptly.
            await asyncio.to_thread(self._release_slowed.wait, self.delay_s)

    def _user_entity(self, request: Request, user: StandInUser) -> dict[str, Any]:
        root = str(request.base_url).rstrip("/") + self.context_path.rstrip("/") + API_PATH
        first, _, last = user.display_name.partition(" ")
        return {
            "link": {"href": f"{root}/user?username={user.name}", "rel": "self"},
            "name": user.name,
            "first-name": first,
            "last-name": last,
            "display-name": user.display_name,
            "email": user.email,
            "password": {
                "link": {"href": f"{root}/user/password?username={user.name}", "rel": "edit"}
            },
            "key": f"1:{user.name.casefold()}",
            "active": user.active,
            "expand": "attributes",
            "attributes": {
                "link": {"href": f"{root}/user/attribute?username={user.name}", "rel": "self"},
                "attributes": [],
            },
        }


def _error(status: int, reason: str, message: str) -> JSONResponse:
    """Crowd's ErrorEntity."""
    return JSONResponse({"reason": reason, "message": message}, status_code=status)


def _password_from(body: bytes) -> str | None:
    try:
        entity = json.loads(body)
    except ValueError:
        return None
    value = entity.get("value") if isinstance(entity, dict) else None
    return value if isinstance(value, str) else None


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name, separator, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if separator else None

"""Bearer-token authentication for every API route, and the per-request context a route works
with: the gateway, who is calling (for the audit log) and the services acting as that caller.
Every route's context comes through `api_caller`, which also asks the token's scopes for the
route (`domain.api_scopes`), so a route cannot forget to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from twofa.domain.api_scopes import ALL_SCOPES, scope_needed
from twofa.domain.client import ClientInfo
from twofa.services.admin.accounts import AccountService
from twofa.services.admin.api_tokens import ApiCaller, ApiTokenService, ScopeMissing
from twofa.services.admin.console_users import ConsoleUsersService
from twofa.services.runtime import Gateway
from twofa.web.api.errors import ApiProblem
from twofa.web.context import client_of, gateway_of

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API token from `twofa token create` or POST /api/v1/tokens.",
)


def unauthorized(message: str, *, token_given: bool) -> ApiProblem:
    challenge = 'Bearer realm="twofa"'
    if token_given:
        challenge += ', error="invalid_token"'
    return ApiProblem(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def token_service(gateway: Gateway) -> ApiTokenService:
    return gateway.api_tokens


async def api_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> ApiCaller:
    if credentials is None:
        raise unauthorized(
            "an API token is required: Authorization: Bearer <token>", token_given=False
        )
    tokens = token_service(gateway_of(request))
    client, path = client_of(request), request.url.path
    caller = await tokens.authenticate(credentials.credentials, client=client, path=path)
    if caller is None:
        raise unauthorized("the API token is unknown, expired or revoked", token_given=True)
    # The path routing matched this request on: every API router's prefix is a literal
    # (`/users`, `/settings` …), so its first segment is the area the route lives in.
    needed = scope_needed(request.method, request.scope["path"])
    try:
        await tokens.require_scope(caller, needed, client=client, path=path)
    except ScopeMissing as missing:
        raise insufficient_scope(missing) from missing
    return caller


def insufficient_scope(missing: ScopeMissing) -> ApiProblem:
    challenge = 'Bearer realm="twofa", error="insufficient_scope"'
    if missing.needed is not None:
        challenge += f', scope="{missing.needed.value}"'
    headers = {"WWW-Authenticate": challenge}
    return ApiProblem(403, "insufficient_scope", str(missing), headers=headers)


@dataclass(frozen=True)
class ApiContext:
    """One authenticated API request."""

    gateway: Gateway
    caller: ApiCaller
    client: ClientInfo

    @property
    def actor(self) -> str:
        return self.caller.actor

    @property
    def accounts(self) -> AccountService:
        """Account actions audited as this token."""
        return self.gateway.accounts.acting_as(self.actor)

    @property
    def user_statuses(self) -> ConsoleUsersService:
        """Users as the console's User Management shows them."""
        return self.gateway.console_users

    @property
    def tokens(self) -> ApiTokenService:
        return token_service(self.gateway)

    async def require_every_scope_over(self, username: str, action: str) -> None:
        """An action on an admin's account (a new password, a 2FA reset, disabling, deleting,
        forgetting devices): only a token that can do everything already may, else a `users`
        token could set an admin's password, reset their 2FA and sign in as them."""
        target = await self.user_statuses.status(username)
        if target is not None and target.is_admin:
            await self.require_every_scope(f"{action} of an admin")

    async def require_every_scope(self, action: str) -> None:
        """An action that makes an admin, who can do everything: only a token that can do
        everything already may (else a `users` token would be a way to every scope)."""
        for scope in sorted(ALL_SCOPES - self.caller.scopes, key=lambda s: s.value):
            try:
                await self.tokens.require_scope(self.caller, scope, client=self.client, path=action)
            except ScopeMissing as missing:
                raise insufficient_scope(missing) from missing


async def api_context(
    request: Request, caller: Annotated[ApiCaller, Depends(api_caller)]
) -> ApiContext:
    return ApiContext(gateway_of(request), caller, client_of(request))


Api = Annotated[ApiContext, Depends(api_context)]

"""Bearer-token authentication for every API route, and the per-request context a route works
with: the gateway, who is calling (for the audit log) and the services acting as that caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from twofa.domain.client import ClientInfo
from twofa.services.admin.accounts import AccountService
from twofa.services.admin.api_tokens import ApiCaller, ApiTokenService
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
    caller = await token_service(gateway_of(request)).authenticate(
        credentials.credentials, client=client_of(request), path=request.url.path
    )
    if caller is None:
        raise unauthorized("the API token is unknown, expired or revoked", token_given=True)
    return caller


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


async def api_context(
    request: Request, caller: Annotated[ApiCaller, Depends(api_caller)]
) -> ApiContext:
    return ApiContext(gateway_of(request), caller, client_of(request))


Api = Annotated[ApiContext, Depends(api_context)]

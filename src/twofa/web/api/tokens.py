"""/api/v1/tokens: list, create and revoke API tokens. A new token's secret is in the create
answer and nowhere else, ever; listings show everything but the secret."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from twofa.domain.api_scopes import Scope
from twofa.services.admin.api_tokens import DEFAULT_DAYS, MAX_DAYS, MAX_NAME_LENGTH, ApiTokenInfo
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import RequestModel, Text100

router = APIRouter(
    prefix="/tokens", tags=["tokens"], route_class=ApiRoute, responses=error_responses(401, 422)
)
TokenIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", description="The token's id.")]


class TokenOut(BaseModel):
    id: str
    name: str
    created_by: str = Field(description='"cli", an admin, or "token:<name>".')
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    active: bool
    scopes: list[Scope] = Field(description="What the token may do.")
    owner: str | None = Field(
        description="The admin it answers to: it stops working when that account is no longer "
        "an enabled admin. null: made on the server's command line."
    )


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer secret. Shown only in this answer: keep it now.")


class TokenIn(RequestModel):
    name: Annotated[Text100, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    days: Annotated[int, Field(ge=1, le=MAX_DAYS, description="Lifetime.")] = DEFAULT_DAYS
    scopes: Annotated[
        list[Scope],
        Field(
            min_length=1,
            max_length=len(Scope),
            description="read: every GET but the tokens'; users: change users and groups; "
            "settings: Duo, methods, access rules; tokens: list, create, revoke tokens. "
            "At most the scopes of the token that asks.",
        ),
    ] = [Scope.READ]  # noqa: RUF012 (pydantic copies defaults)


def token_out(info: ApiTokenInfo, now: datetime) -> TokenOut:
    return TokenOut(
        id=info.id,
        name=info.name,
        created_by=info.created_by,
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
        last_used_at=info.last_used_at,
        active=info.active_at(now),
        scopes=[scope for scope in Scope if scope in info.scopes],
        owner=info.owner,
    )


@router.get("", summary="Every API token, without secrets")
async def list_tokens(api: Api) -> list[TokenOut]:
    now = api.gateway.clock.now()
    return [token_out(info, now) for info in await api.tokens.tokens()]


@router.post(
    "",
    summary="Create a token (its secret is shown once)",
    status_code=201,
    responses=error_responses(409),
)
async def create_token(api: Api, body: TokenIn) -> TokenCreated:
    issued = await api.tokens.create(
        body.name,
        created_by=api.actor,
        scopes=frozenset(body.scopes),
        days=body.days,
        client=api.client,
        by_token=api.caller,
    )
    shown = token_out(issued.info, api.gateway.clock.now())
    return TokenCreated(**shown.model_dump(), token=issued.token)


@router.delete(
    "/{token_id}", summary="Revoke a token", status_code=204, responses=error_responses(404)
)
async def revoke_token(api: Api, token_id: TokenIdPath) -> Response:
    await api.tokens.revoke(token_id, actor=api.actor, client=api.client)
    return Response(status_code=204)

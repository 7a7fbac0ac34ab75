"""API tokens: only a hash is stored, they expire and can be revoked, last use is written at
most once a minute, and creating and revoking are audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.unit.services.conftest import START, audit_rows
from twofa.clock import FrozenClock
from twofa.domain.api_scopes import ALL_SCOPES
from twofa.security.tokens import token_digest
from twofa.services.admin.api_tokens import (
    ApiTokenNameTaken,
    ApiTokenService,
    InvalidApiTokenRequest,
    UnknownApiToken,
    token_id_of,
)
from twofa.services.runtime import Gateway
from twofa.storage.tables import ApiTokenRow


@pytest.fixture
def tokens(gateway: Gateway, clock: FrozenClock) -> ApiTokenService:
    return ApiTokenService(gateway.db, clock)


async def stored_rows(gateway: Gateway) -> list[ApiTokenRow]:
    async with gateway.db.begin() as db:
        return list((await db.scalars(select(ApiTokenRow))).all())


async def test_only_the_hash_of_a_new_token_is_stored(
    tokens: ApiTokenService, gateway: Gateway
) -> None:
    issued = await tokens.create("deploy", created_by="admin", scopes=ALL_SCOPES)

    [row] = await stored_rows(gateway)
    assert row.token_hash == token_digest(issued.token)
    assert issued.token not in {row.token_hash, row.id, row.name}
    assert issued.token.startswith(f"twofa_{row.id}_")
    assert token_id_of(issued.token) == row.id
    assert (row.created_by, row.created_at, row.revoked_at) == ("admin", START, None)


async def test_tokens_expire_after_90_days_unless_told_otherwise(tokens: ApiTokenService) -> None:
    default = await tokens.create("default", created_by="cli", scopes=ALL_SCOPES)
    short = await tokens.create("short", created_by="cli", scopes=ALL_SCOPES, days=1)
    longest = await tokens.create("longest", created_by="cli", scopes=ALL_SCOPES, days=365)
    assert default.info.expires_at == START + timedelta(days=90)
    assert short.info.expires_at == START + timedelta(days=1)
    assert longest.info.expires_at == START + timedelta(days=365)


@pytest.mark.parametrize("days", [0, -1, 366])
async def test_lifetime_outside_1_to_365_days_is_refused(
    tokens: ApiTokenService, gateway: Gateway, days: int
) -> None:
    with pytest.raises(InvalidApiTokenRequest, match="1 to 365 days") as refused:
        await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES, days=days)
    assert refused.value.field == "days"
    assert await stored_rows(gateway) == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there"])
async def test_bad_names_are_refused(tokens: ApiTokenService, name: str) -> None:
    with pytest.raises(InvalidApiTokenRequest, match="invalid token name") as refused:
        await tokens.create(name, created_by="cli", scopes=ALL_SCOPES)
    assert refused.value.field == "name"


async def test_an_active_name_cannot_be_reused_but_a_revoked_one_can(
    tokens: ApiTokenService,
) -> None:
    first = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    with pytest.raises(ApiTokenNameTaken):
        await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    await tokens.revoke(first.info.id, actor="cli")
    second = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    assert second.info.id != first.info.id


async def test_authenticate_names_the_token_as_the_actor(tokens: ApiTokenService) -> None:
    issued = await tokens.create("deploy", created_by="alice", scopes=ALL_SCOPES)

    caller = await tokens.authenticate(issued.token)

    assert caller is not None
    assert (caller.token_id, caller.created_by, caller.actor) == (
        issued.info.id,
        "alice",
        "token:deploy",
    )


async def test_unknown_and_malformed_bearers_are_refused(tokens: ApiTokenService) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    forged = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    for bearer in ("", "deploy", issued.token + "x", forged, token_digest(issued.token)):
        assert await tokens.authenticate(bearer) is None, bearer


async def test_a_forged_secret_for_a_real_id_is_audited_as_unknown(
    tokens: ApiTokenService, gateway: Gateway
) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    forged = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    assert await tokens.authenticate(forged, path="/api/v1/users") is None
    [row] = await audit_rows(gateway, "api_token_refused")
    assert row.outcome == "unknown"
    assert row.detail == {"token_id": issued.info.id, "path": "/api/v1/users"}


async def test_expired_token_is_refused(tokens: ApiTokenService, clock: FrozenClock) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES, days=1)
    clock.advance(timedelta(days=1) - timedelta(seconds=1))
    assert await tokens.authenticate(issued.token) is not None
    clock.advance(timedelta(seconds=1))
    assert await tokens.authenticate(issued.token) is None
    [listed] = await tokens.tokens()
    assert not listed.active_at(clock.now())


async def test_revoked_token_is_refused_and_revoking_is_audited_once(
    tokens: ApiTokenService, gateway: Gateway, clock: FrozenClock
) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    revoked = await tokens.revoke(issued.info.id, actor="token:ops")
    clock.advance(timedelta(minutes=5))
    again = await tokens.revoke(issued.info.id, actor="cli")

    assert revoked.revoked_at == again.revoked_at == START
    assert await tokens.authenticate(issued.token) is None
    [record] = await audit_rows(gateway, "api_token_revoke")
    assert record.detail["actor"] == "token:ops"
    assert record.detail["name"] == "deploy"
    [refused] = await audit_rows(gateway, "api_token_refused")
    assert refused.outcome == "revoked"


async def test_revoking_an_unknown_token_is_an_error(tokens: ApiTokenService) -> None:
    with pytest.raises(UnknownApiToken):
        await tokens.revoke("0123456789abcdef", actor="cli")


async def test_creation_is_audited_without_the_secret(
    tokens: ApiTokenService, gateway: Gateway
) -> None:
    issued = await tokens.create("deploy", created_by="alice", scopes=ALL_SCOPES, days=30)
    [record] = await audit_rows(gateway, "api_token_create")
    assert record.outcome == "ok"
    assert record.detail == {
        "actor": "alice",
        "token_id": issued.info.id,
        "name": "deploy",
        "expires_at": (START + timedelta(days=30)).isoformat(),
        "days": 30,
        "scopes": "read users settings tokens",
    }
    assert issued.token not in str(record.detail)


async def test_last_use_is_written_at_most_once_a_minute(
    tokens: ApiTokenService, clock: FrozenClock
) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    assert (await tokens.get(issued.info.id)).last_used_at is None

    await tokens.authenticate(issued.token)
    first_use = START
    clock.advance(timedelta(seconds=59))
    await tokens.authenticate(issued.token)
    assert (await tokens.get(issued.info.id)).last_used_at == first_use

    clock.advance(timedelta(seconds=1))
    await tokens.authenticate(issued.token)
    assert (await tokens.get(issued.info.id)).last_used_at == START + timedelta(minutes=1)


async def test_listing_never_carries_a_secret(tokens: ApiTokenService) -> None:
    issued = await tokens.create("deploy", created_by="cli", scopes=ALL_SCOPES)
    [listed] = await tokens.tokens()
    assert listed == issued.info
    assert issued.token not in repr(listed)
    assert not hasattr(listed, "token")

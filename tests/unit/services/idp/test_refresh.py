"""Refresh tokens at the service: the scope of a refresh may only narrow, a confidential client
gets one and a public client none, a family expires a fixed time after the code exchange
however often it rotates, and reuse and revocation are audited."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.services.conftest import BROWSER, audit_rows
from tests.unit.services.idp.test_provider import (
    CALLBACK,
    bob_session,
    code_for,
    exchange,
    register,
)
from twofa.clock import FrozenClock
from twofa.services.idp.applications import IssuedApplication
from twofa.services.idp.claims import s256
from twofa.services.idp.errors import InvalidGrant, OAuthError
from twofa.services.idp.refresh import REFRESH_FAMILY_LIFETIME, narrowed_scope
from twofa.services.runtime import Gateway


def test_a_refresh_without_a_scope_keeps_the_granted_one() -> None:
    assert narrowed_scope("openid profile groups", None) == "openid profile groups"
    assert narrowed_scope("openid profile groups", " ") == "openid profile groups"


def test_a_narrower_scope_keeps_the_granted_order() -> None:
    assert narrowed_scope("openid profile groups", "groups openid") == "openid groups"


def test_a_wider_scope_is_invalid_scope() -> None:
    with pytest.raises(OAuthError) as refused:
        narrowed_scope("openid profile", "openid email")
    assert refused.value.code == "invalid_scope"


async def first_tokens(gateway: Gateway) -> tuple[IssuedApplication, dict[str, Any]]:
    app = await register(gateway, second_factor_required=False)
    code = await code_for(gateway, app, await bob_session(gateway))
    return app, await gateway.oidc.tokens.token(*exchange(app, code), BROWSER)


async def refreshed(gateway: Gateway, app: IssuedApplication, token: str) -> dict[str, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return await gateway.oidc.tokens.token(form, exchange(app, "")[1], BROWSER)


async def test_a_public_client_gets_no_refresh_token(gateway: Gateway) -> None:
    public = await register(gateway, name="Tool", public=True, second_factor_required=False)
    verifier = "v" * 50
    pkce = {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    code = await code_for(gateway, public, await bob_session(gateway), **pkce)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": public.application.client_id,
        "code_verifier": verifier,
    }
    tokens = await gateway.oidc.tokens.token(form, None, BROWSER)
    assert "access_token" in tokens
    assert "refresh_token" not in tokens


async def test_a_family_expires_a_fixed_time_after_the_code_however_often_it_rotates(
    gateway: Gateway, clock: FrozenClock
) -> None:
    app, tokens = await first_tokens(gateway)
    token = tokens["refresh_token"]
    for _ in range(3):
        clock.advance(REFRESH_FAMILY_LIFETIME / 4)
        token = (await refreshed(gateway, app, token))["refresh_token"]
    clock.advance(REFRESH_FAMILY_LIFETIME / 4)
    with pytest.raises(InvalidGrant, match="expired"):
        await refreshed(gateway, app, token)


async def test_reuse_is_audited_and_the_successor_is_revoked(gateway: Gateway) -> None:
    app, tokens = await first_tokens(gateway)
    successor = (await refreshed(gateway, app, tokens["refresh_token"]))["refresh_token"]

    with pytest.raises(InvalidGrant, match="used already"):
        await refreshed(gateway, app, tokens["refresh_token"])
    with pytest.raises(InvalidGrant, match="revoked"):
        await refreshed(gateway, app, successor)
    assert [r.outcome for r in await audit_rows(gateway, "oidc_refresh_token")] == ["reused"]


async def test_a_revocation_is_audited_once(gateway: Gateway) -> None:
    app, tokens = await first_tokens(gateway)
    form = {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}
    for _ in range(2):
        assert await gateway.oidc.tokens.revoke(form, exchange(app, "")[1], BROWSER) == {}
    with pytest.raises(InvalidGrant, match="revoked"):
        await refreshed(gateway, app, tokens["refresh_token"])
    assert [r.outcome for r in await audit_rows(gateway, "oidc_refresh_token")] == ["revoked"]

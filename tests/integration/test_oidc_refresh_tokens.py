"""Refresh tokens and revocation of twofa's OpenID Connect provider over real HTTP, on SQLite
and PostgreSQL (the fixtures of test_oidc_provider): a refresh rotates, a rotated token
presented again revokes its whole family, two refreshes racing give one answer, a token is
its client's only, a disabled or no longer admitted user is refused, and RFC 7009 revocation
revokes what the client holds and nothing another client holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.integration import test_oidc_provider
from tests.integration.test_oidc_provider import (
    CALLBACK,
    Provider,
    bob_code,
    tokens_for,
    verified_claims,
)
from twofa.security.tokens import token_digest
from twofa.services.idp.applications import IssuedApplication
from twofa.services.idp.claims import s256
from twofa.services.runtime import Gateway
from twofa.storage.oidc_tables import OidcRefreshTokenRow
from twofa.storage.tables import ApplicationRow, AuditRow

# The provider on SQLite and PostgreSQL, and a browser for it: the fixtures, shared by name.
provider = test_oidc_provider.provider
browser = test_oidc_provider.browser


@asynccontextmanager
async def database(provider: Provider) -> AsyncIterator[AsyncSession]:
    gateway = await Gateway.start(provider.settings)
    try:
        async with gateway.db.begin() as db:
            yield db
    finally:
        await gateway.close()


def credentials(app: IssuedApplication) -> tuple[str, str]:
    return app.application.client_id, app.client_secret or ""


async def refresh(
    provider: Provider, app: IssuedApplication, token: str, **extra: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as rp:
        form = {"grant_type": "refresh_token", "refresh_token": token, **extra}
        return await rp.post("/oidc/token", data=form, auth=credentials(app))


async def revoke(provider: Provider, app: IssuedApplication, token: str, **extra: str) -> int:
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as rp:
        answer = await rp.post(
            "/oidc/revoke", data={"token": token, **extra}, auth=credentials(app)
        )
    assert answer.status_code == 200, answer.text
    return answer.status_code


async def userinfo_status(provider: Provider, access_token: str) -> int:
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        bearer = {"Authorization": f"Bearer {access_token}"}
        return (await rp.get("/oidc/userinfo", headers=bearer)).status_code


def refused_grant(answer: httpx.Response) -> bool:
    return answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


async def bob_tokens(provider: Provider, browser: httpx.AsyncClient) -> Any:
    app = provider.password_only
    return await tokens_for(provider, app, await bob_code(browser, app))


async def test_a_refresh_rotates_the_token_and_keeps_the_original_sign_in(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    signed_in = await verified_claims(provider, first["id_token"])
    async with AsyncOAuth2Client(*credentials(app)) as client:  # a relying party's library
        second = await client.refresh_token(
            f"{provider.base_url}/oidc/token", refresh_token=first["refresh_token"]
        )
    refreshed = await verified_claims(provider, second["id_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"] == "openid profile email groups"
    assert refreshed["sub"] == signed_in["sub"]
    assert refreshed["aud"] == app.application.client_id
    assert refreshed["auth_time"] == signed_in["auth_time"]
    assert refreshed["amr"] == signed_in["amr"] == ["pwd"]
    assert "nonce" in signed_in
    assert "nonce" not in refreshed
    assert await userinfo_status(provider, second["access_token"]) == 200
    assert refused_grant(await refresh(provider, app, first["refresh_token"]))


async def test_reusing_a_rotated_token_revokes_the_whole_family(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    second = (await refresh(provider, app, first["refresh_token"])).json()
    assert await userinfo_status(provider, second["access_token"]) == 200

    assert refused_grant(await refresh(provider, app, first["refresh_token"]))
    assert refused_grant(await refresh(provider, app, second["refresh_token"]))
    assert await userinfo_status(provider, second["access_token"]) == 401
    assert await userinfo_status(provider, first["access_token"]) == 401
    async with database(provider) as db:
        reused = select(func.count()).where(
            AuditRow.kind == "oidc_refresh_token", AuditRow.outcome == "reused"
        )
        assert await db.scalar(reused) == 1


async def test_two_refreshes_of_one_token_racing_give_tokens_once(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    async with httpx.AsyncClient(base_url=provider.base_url, timeout=30) as rp:
        answers = await asyncio.gather(
            *(rp.post("/oidc/token", data=form, auth=credentials(app)) for _ in range(2))
        )
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    assert sum(refused_grant(answer) for answer in answers) == 1
    # The loser presented a used token: a reuse, so the winner's successor is revoked too.
    winner = next(answer for answer in answers if answer.status_code == 200).json()
    assert refused_grant(await refresh(provider, app, winner["refresh_token"]))
    assert await userinfo_status(provider, winner["access_token"]) == 401


async def test_a_refresh_token_is_refused_to_another_client_and_left_unused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    first = await bob_tokens(provider, browser)
    assert refused_grant(await refresh(provider, provider.strict, first["refresh_token"]))
    assert (await refresh(provider, provider.password_only, first["refresh_token"])).is_success


async def test_a_disabled_user_cannot_refresh(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    first = await bob_tokens(provider, browser)
    gateway = await Gateway.start(provider.settings)
    try:
        await gateway.accounts.set_enabled("bob", False)
    finally:
        await gateway.close()
    assert refused_grant(await refresh(provider, provider.password_only, first["refresh_token"]))


async def test_a_user_the_application_no_longer_admits_cannot_refresh(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    async with database(provider) as db:
        await db.execute(
            update(ApplicationRow)
            .where(ApplicationRow.id == app.application.id)
            .values(allowed_users=["alice"])
        )
    assert refused_grant(await refresh(provider, app, first["refresh_token"]))


async def test_an_expired_refresh_token_is_refused(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    first = await bob_tokens(provider, browser)
    async with database(provider) as db:
        await db.execute(
            update(OidcRefreshTokenRow)
            .where(OidcRefreshTokenRow.token_hash == token_digest(first["refresh_token"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    answer = await refresh(provider, provider.password_only, first["refresh_token"])
    assert refused_grant(answer)
    assert "expired" in answer.json()["error_description"]


async def test_a_refresh_may_narrow_the_scope_but_not_widen_it(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app, scope="openid profile")
    first = await tokens_for(provider, app, code)
    wider = await refresh(provider, app, first["refresh_token"], scope="openid profile groups")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    narrower = await refresh(provider, app, first["refresh_token"], scope="openid")
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "openid"
    claims = await verified_claims(provider, narrower.json()["id_token"])
    assert "name" not in claims  # profile narrowed away
    # The successor keeps the granted scope.
    again = await refresh(provider, app, narrower.json()["refresh_token"])
    assert again.json()["scope"] == "openid profile"


async def test_a_replayed_code_revokes_the_refresh_tokens_it_gave(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    code = await bob_code(browser, app)
    first = await tokens_for(provider, app, code)
    second = (await refresh(provider, app, first["refresh_token"])).json()
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
        replay = await rp.post("/oidc/token", data=form, auth=credentials(app))
    assert refused_grant(replay)
    assert refused_grant(await refresh(provider, app, second["refresh_token"]))
    assert await userinfo_status(provider, second["access_token"]) == 401


async def test_revoking_a_refresh_token_revokes_its_family_and_access_tokens(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    second = (await refresh(provider, app, first["refresh_token"])).json()
    await revoke(provider, app, second["refresh_token"], token_type_hint="refresh_token")
    assert refused_grant(await refresh(provider, app, second["refresh_token"]))
    assert await userinfo_status(provider, second["access_token"]) == 401
    await revoke(provider, app, second["refresh_token"])  # again: still 200


async def test_revoking_an_access_token_leaves_the_refresh_token(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.password_only
    first = await bob_tokens(provider, browser)
    await revoke(provider, app, first["access_token"])  # no hint: found all the same
    assert await userinfo_status(provider, first["access_token"]) == 401
    assert (await refresh(provider, app, first["refresh_token"])).status_code == 200
    await revoke(provider, app, "never-issued", token_type_hint="access_token")


async def test_revoking_another_clients_token_does_nothing(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    first = await bob_tokens(provider, browser)
    await revoke(provider, provider.strict, first["refresh_token"])
    await revoke(provider, provider.strict, first["access_token"])
    assert await userinfo_status(provider, first["access_token"]) == 200
    assert (await refresh(provider, provider.password_only, first["refresh_token"])).is_success


async def test_revocation_needs_the_clients_secret_and_a_known_token_type(
    provider: Provider,
) -> None:
    app = provider.password_only
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        wrong = await rp.post(
            "/oidc/revoke",
            data={"token": "anything"},
            auth=(app.application.client_id, "not-the-secret"),
        )
        odd_type = await rp.post(
            "/oidc/revoke",
            data={"token": "anything", "token_type_hint": "id_token"},
            auth=credentials(app),
        )
        no_token = await rp.post("/oidc/revoke", data={}, auth=credentials(app))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert odd_type.status_code == 400
    assert odd_type.json()["error"] == "unsupported_token_type"
    assert no_token.json()["error"] == "invalid_request"


async def test_a_public_client_gets_no_refresh_token_and_discovery_names_revocation(
    provider: Provider, browser: httpx.AsyncClient
) -> None:
    app = provider.public
    verifier = "v" * 50
    code = await bob_code(browser, app, code_challenge=s256(verifier), code_challenge_method="S256")
    async with httpx.AsyncClient(base_url=provider.base_url) as rp:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": app.application.client_id,
            "code_verifier": verifier,
        }
        tokens = await rp.post("/oidc/token", data=form)
        discovery = (await rp.get("/.well-known/openid-configuration")).json()
    assert tokens.status_code == 200, tokens.text
    assert "refresh_token" not in tokens.json()
    assert discovery["revocation_endpoint"] == f"{provider.base_url}/oidc/revoke"
    assert discovery["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert "client_secret_basic" in discovery["revocation_endpoint_auth_methods_supported"]

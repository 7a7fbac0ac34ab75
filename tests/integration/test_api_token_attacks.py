"""API tokens as an attacker holding one would use them, over real HTTP on SQLite and
PostgreSQL: a token reaches only what its scopes open (every route of the API is walked), it
cannot mint a token with more than it has, and it dies with its admin (disabled, demoted or
deleted). Each refusal is a 403 `insufficient_scope` (or a 401 for a dead token), audited, with
nothing changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import RunningSimulator
from tests.integration.test_api import Api, error_of, every_operation, issue_token, started_api
from tests.integration.test_gate_walks_every_route import app_routes
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import SECRET
from twofa.config import load_settings
from twofa.domain.api_scopes import ALL_SCOPES, SAFE_METHODS, Scope, scope_needed
from twofa.services.runtime import Gateway
from twofa.storage.tables import ApiTokenRow, AuditRow, ConsoleSettingRow, UserRow

pytestmark = pytest.mark.integration
# The API's description, and the catch-all that answers unknown paths with a JSON 404.
WITHOUT_TOKEN = ("/api/v1/openapi.json", "/api/v1/{path:path}")
OWNER, OWNER_PASSWORD = "tokenadmin", "token-admin-password-1"


@pytest.fixture(params=["sqlite", "postgresql"])
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Api]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, started_api(url, simulator) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def counts(api: Api) -> tuple[int, int, int]:
    """Users, tokens and saved console settings: what a refused change must leave alone."""
    gateway = await Gateway.start(api.settings)
    try:
        async with gateway.db.begin() as db:
            return (
                int(await db.scalar(select(func.count()).select_from(UserRow)) or 0),
                int(await db.scalar(select(func.count()).select_from(ApiTokenRow)) or 0),
                int(await db.scalar(select(func.count()).select_from(ConsoleSettingRow)) or 0),
            )
    finally:
        await gateway.close()


async def add_owner(api: Api) -> None:
    gateway = await Gateway.start(api.settings)
    try:
        await gateway.accounts.add_user(OWNER, OWNER_PASSWORD, is_admin=True)
    finally:
        await gateway.close()


def test_every_api_route_needs_a_scope_the_table_knows() -> None:
    """A new area of the API is closed to every token until `domain.api_scopes` names its
    scope; this walks the app's routes so the table cannot fall behind unnoticed."""
    settings = load_settings(environ={}, mode="dev", secret_key=SECRET)
    routes = [
        (method, path)
        for method, path in app_routes(settings)
        if path.startswith("/api/v1/") and path not in WITHOUT_TOKEN
    ]
    assert len(routes) >= 25
    for method, path in routes:
        assert scope_needed(method, path) is not None, (method, path)


async def test_attack_read_token_tries_every_change_of_the_api(api: Api) -> None:
    reader = await api.issue("reader", scopes=frozenset({Scope.READ}))
    before = await counts(api)
    changes = [(m, p) for m, p in await every_operation(api) if m not in SAFE_METHODS]
    assert len(changes) >= 15

    for method, path in changes:
        answer = await api.http.request(method, path, json={}, headers=bearer(reader))
        error_of(answer, 403, "insufficient_scope")
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]

    assert await counts(api) == before
    refusals = [row for row in await api.audit("api_token_refused") if row.outcome == "scope"]
    assert len(refusals) == len(changes)
    assert {row.detail["needed"] for row in refusals} == {"users", "settings", "tokens"}


async def test_a_read_token_reads_but_not_the_token_list(api: Api) -> None:
    reader = await api.issue("reader", scopes=frozenset({Scope.READ}))
    assert (await api.http.get("/users", headers=bearer(reader))).status_code == 200
    assert (await api.http.get("/settings/duo", headers=bearer(reader))).status_code == 200
    error_of(await api.http.get("/tokens", headers=bearer(reader)), 403, "insufficient_scope")


async def test_a_users_token_cannot_touch_the_duo_keys_or_rules(api: Api) -> None:
    users_only = await api.issue("users-only", scopes=frozenset({Scope.USERS}))
    created = await api.http.post(
        "/users",
        json={"username": "carol", "password": "carol-password-long-1"},
        headers=bearer(users_only),
    )
    assert created.status_code == 201, created.text
    duo = {"integration_key": "DIXXXXXXXXXXXXXXXXXX", "secret_key": "x" * 40}
    answer = await api.http.put("/settings/duo", json=duo, headers=bearer(users_only))
    error_of(answer, 403, "insufficient_scope")
    answer = await api.http.post("/access/rules", json={}, headers=bearer(users_only))
    error_of(answer, 403, "insufficient_scope")


async def test_attack_token_mints_a_token_with_more_scopes_than_it_has(api: Api) -> None:
    minter = await api.issue("minter", scopes=frozenset({Scope.READ, Scope.TOKENS}))
    before = await counts(api)

    for wanted in (["settings"], ["read", "users"], ["read", "tokens", "settings"]):
        answer = await api.http.post(
            "/tokens",
            json={"name": f"wider-{len(wanted)}", "scopes": wanted},
            headers=bearer(minter),
        )
        error_of(answer, 403, "forbidden")

    assert await counts(api) == before
    narrower = await api.http.post(
        "/tokens", json={"name": "narrower", "scopes": ["read"]}, headers=bearer(minter)
    )
    assert narrower.status_code == 201, narrower.text
    assert narrower.json()["scopes"] == ["read"]


async def test_a_token_made_without_scopes_asked_reads_only(api: Api) -> None:
    made = await api.http.post("/tokens", json={"name": "default"})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["read"]
    error_of(
        await api.http.post("/users", json={}, headers=bearer(made.json()["token"])),
        403,
        "insufficient_scope",
    )


@pytest.mark.parametrize("fate", ["disabled", "demoted", "deleted"])
async def test_attack_token_outlives_the_admin_who_made_it(api: Api, fate: str) -> None:
    await add_owner(api)
    owned = await issue_token(api.settings, "owned", scopes=ALL_SCOPES, owner=OWNER)
    assert (await api.http.get("/users", headers=bearer(owned))).status_code == 200
    # ...and a token the owned one makes answers to the same admin
    child = await api.http.post(
        "/tokens", json={"name": "child", "scopes": ["read"]}, headers=bearer(owned)
    )
    assert child.status_code == 201, child.text
    assert child.json()["owner"] == OWNER
    child_token = child.json()["token"]

    if fate == "disabled":
        changed = await api.http.patch(f"/users/{OWNER}", json={"enabled": False})
    elif fate == "demoted":
        changed = await api.http.patch(f"/users/{OWNER}", json={"is_admin": False})
        assert changed.json()["is_admin"] is False
    else:
        changed = await api.http.delete(f"/users/{OWNER}")
    assert changed.status_code in (200, 204), changed.text

    for token in (owned, child_token):
        answer = await api.http.get("/users", headers=bearer(token))
        error_of(answer, 401, "unauthorized")
    outcomes = [row.outcome for row in await api.audit("api_token_refused")]
    expected = "unknown" if fate == "deleted" else "owner_not_admin"
    assert outcomes == [expected, expected]
    # the token that made the change, made on the command line, answers to nobody and lives on
    assert (await api.http.get("/users")).status_code == 200


async def test_a_token_refused_for_scope_is_audited_without_its_secret(api: Api) -> None:
    reader = await api.issue("reader", scopes=frozenset({Scope.READ}))
    await api.http.delete("/tokens/0123456789abcdef", headers=bearer(reader))
    rows: list[AuditRow] = [
        row for row in await api.audit("api_token_refused") if row.outcome == "scope"
    ]
    assert len(rows) == 1
    assert rows[0].detail["needed"] == "tokens"
    assert rows[0].detail["actor"] == "token:reader"
    assert reader not in str(rows[0].detail)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", f"/users/{OWNER}", {"password": "attacker-chosen-password-1"}),
        ("POST", f"/users/{OWNER}/reset-2fa", None),
        ("PATCH", f"/users/{OWNER}", {"enabled": False}),
        ("DELETE", f"/users/{OWNER}", None),
        ("POST", f"/users/{OWNER}/forget-devices", None),
    ],
)
async def test_attack_users_token_takes_over_an_admin_account(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """A `users` token sets an admin's password and resets their 2FA, then signs in as them
    with the password it chose and enrols its own second factor: every step on an admin's
    account needs a token with every scope."""
    await add_owner(api)
    users_only = await api.issue("users-only", scopes=frozenset({Scope.USERS, Scope.READ}))
    before = await counts(api)
    admin_before = (await api.http.get(f"/users/{OWNER}")).json()

    answer = await api.http.request(method, path, json=body, headers=bearer(users_only))

    error_of(answer, 403, "insufficient_scope")
    assert await counts(api) == before
    assert (await api.http.get(f"/users/{OWNER}")).json() == admin_before
    # the same on a user who is not an admin is the users scope's own business
    plain = await api.http.post(
        "/users", json={"username": "carol", "password": "carol-password-long-1"}
    )
    assert plain.status_code == 201
    carol_path = path.replace(OWNER, "carol")
    allowed = await api.http.request(method, carol_path, json=body, headers=bearer(users_only))
    assert allowed.status_code in (200, 204), allowed.text


async def test_attack_a_stolen_tokens_offspring_outlive_its_revocation(api: Api) -> None:
    """A stolen token with a day left mints a year-long child, which mints a grandchild;
    the defender revokes the stolen one. The offspring never outlived it, and go with it."""
    stolen = await api.issue("stolen", days=1)
    child = await api.http.post(
        "/tokens",
        json={"name": "child", "scopes": ["read", "tokens"], "days": 365},
        headers=bearer(stolen),
    )
    assert child.status_code == 201, child.text
    stolen_info = next(t for t in (await api.http.get("/tokens")).json() if t["name"] == "stolen")
    assert child.json()["expires_at"] == stolen_info["expires_at"]  # capped at its maker's
    grandchild = await api.http.post(
        "/tokens",
        json={"name": "grandchild", "scopes": ["read"]},
        headers=bearer(child.json()["token"]),
    )
    assert grandchild.status_code == 201, grandchild.text

    assert (await api.http.delete(f"/tokens/{stolen_info['id']}")).status_code == 204

    for token in (stolen, child.json()["token"], grandchild.json()["token"]):
        error_of(await api.http.get("/users", headers=bearer(token)), 401, "unauthorized")
    revoked = [row.detail["name"] for row in await api.audit("api_token_revoke")]
    assert sorted(revoked) == ["child", "grandchild", "stolen"]

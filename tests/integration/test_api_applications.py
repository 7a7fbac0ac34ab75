"""/api/v1/applications over real HTTP: add an OpenID Connect client (its secret in that answer
only), list, show, replace, rotate the secret (the old one refused at the token endpoint from
then on) and remove, each audited as the token; the API's one error shape for a refused
setting (422 by field), an unknown client id (404), a malformed body (422) and a token without
the scope a change needs (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import ACTOR, TOKEN_NAME, Api, error_of, issue_token
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway
from twofa.domain.api_scopes import Scope

APPLICATIONS = "/applications"
CALLBACK = "https://grafana.example.com/login/generic_oauth"


@pytest.fixture
async def api(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator) as (base_url, settings),
    ):
        token = await issue_token(settings, TOKEN_NAME)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as http:
            yield Api(http, settings, token)


def grafana(**fields: object) -> dict[str, object]:
    return {"name": "Grafana", "redirect_uris": [CALLBACK], **fields}


async def add(api: Api, **fields: object) -> dict[str, Any]:
    answer = await api.http.post(APPLICATIONS, json=grafana(**fields))
    assert answer.status_code == 201, answer.text
    added: dict[str, Any] = answer.json()
    return added


async def token_endpoint_says(api: Api, client_id: str, secret: str) -> str:
    """The token endpoint's error for a made-up code: `invalid_grant` once the client is
    authenticated, `invalid_client` when its secret is wrong."""
    async with httpx.AsyncClient() as relying_party:
        answer = await relying_party.post(
            api.http.base_url.copy_with(path="/oidc/token"),
            auth=(client_id, secret),
            data={"grant_type": "authorization_code", "code": "made-up", "redirect_uri": CALLBACK},
        )
    error: str = answer.json()["error"]
    return error


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_adding_answers_the_secret_once_and_never_again(api: Api) -> None:
    added = await add(api, allowed_groups=["engineering"], skip_consent=False)
    secret = added["client_secret"]
    assert isinstance(secret, str)
    assert len(secret) >= 40
    assert added["public"] is False
    assert added["second_factor_required"] is True
    assert (added["allowed_groups"], added["skip_consent"]) == (["engineering"], False)

    listing = await api.http.get(APPLICATIONS)
    shown = await api.http.get(f"{APPLICATIONS}/{added['client_id']}")
    assert [app["client_id"] for app in listing.json()] == [added["client_id"]]
    assert shown.json()["name"] == "Grafana"
    for answer in (listing, shown):
        assert "client_secret" not in answer.text
        assert secret not in answer.text
    assert await token_endpoint_says(api, added["client_id"], secret) == "invalid_grant"


async def test_a_public_client_has_no_secret_to_rotate(api: Api) -> None:
    added = await add(api, public=True)
    assert added["client_secret"] is None
    answer = await api.http.post(f"{APPLICATIONS}/{added['client_id']}/rotate-secret")
    error = error_of(answer, 422, "invalid")
    assert "public client" in error["fields"]["public"]


async def test_replace_rotate_and_remove_are_audited_as_the_token(api: Api) -> None:
    added = await add(api)
    client_id = added["client_id"]
    replaced = await api.http.put(
        f"{APPLICATIONS}/{client_id}",
        json=grafana(name="Grafana prod", allowed_users=["alice"], second_factor_required=False),
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["client_id"], body["name"], body["allowed_users"]) == (
        client_id,
        "Grafana prod",
        ["alice"],
    )
    assert body["second_factor_required"] is False
    assert "client_secret" not in body
    assert await token_endpoint_says(api, client_id, added["client_secret"]) == "invalid_grant"

    rotated = await api.http.post(f"{APPLICATIONS}/{client_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["client_secret"] != added["client_secret"]
    removed = await api.http.delete(f"{APPLICATIONS}/{client_id}")
    assert removed.status_code == 204
    assert (await api.http.get(APPLICATIONS)).json() == []

    rows = await api.audit("application")
    assert [row.outcome for row in rows] == ["added", "updated", "secret_rotated", "removed"]
    assert {row.username for row in rows} == {ACTOR}
    assert rows[1].detail["changed"] == ["name", "allowed_users", "second_factor_required"]


async def test_rotating_retires_the_old_secret_at_the_token_endpoint(api: Api) -> None:
    added = await add(api)
    client_id, old_secret = added["client_id"], added["client_secret"]
    new_secret = (await api.http.post(f"{APPLICATIONS}/{client_id}/rotate-secret")).json()[
        "client_secret"
    ]
    assert await token_endpoint_says(api, client_id, old_secret) == "invalid_client"
    assert await token_endpoint_says(api, client_id, new_secret) == "invalid_grant"


async def test_a_refused_setting_is_a_422_by_field_and_saves_nothing(api: Api) -> None:
    answer = await api.http.post(
        APPLICATIONS, json=grafana(redirect_uris=[CALLBACK, "http://grafana.example.com/cb"])
    )
    error = error_of(answer, 422, "invalid")
    assert "must use https" in error["fields"]["redirect_uris"]
    assert (await api.http.get(APPLICATIONS)).json() == []
    assert await api.audit("application") == []


async def test_a_refused_replace_changes_nothing(api: Api) -> None:
    added = await add(api)
    await add(api, name="Other")
    answer = await api.http.put(
        f"{APPLICATIONS}/{added['client_id']}", json=grafana(name="Other", allowed_users=["x"])
    )
    error = error_of(answer, 422, "invalid")
    assert "an application named 'Other' exists" in error["fields"]["name"]
    shown = (await api.http.get(f"{APPLICATIONS}/{added['client_id']}")).json()
    assert (shown["name"], shown["allowed_users"]) == ("Grafana", [])


async def test_an_unknown_client_id_is_a_404(api: Api) -> None:
    unknown = f"{APPLICATIONS}/0123456789abcdef"
    error = error_of(await api.http.get(unknown), 404, "not_found")
    assert "0123456789abcdef" in error["message"]
    error_of(await api.http.put(unknown, json=grafana()), 404, "not_found")
    error_of(await api.http.post(f"{unknown}/rotate-secret"), 404, "not_found")
    error_of(await api.http.delete(unknown), 404, "not_found")


async def test_a_malformed_body_is_a_422(api: Api) -> None:
    answer = await api.http.post(
        APPLICATIONS, json={"name": "", "redirect_uris": [], "client_secret": "mine"}
    )
    error = error_of(answer, 422, "invalid")
    assert {"name", "redirect_uris", "client_secret"} <= set(error["fields"])
    added = await add(api)
    replaced = await api.http.put(f"{APPLICATIONS}/{added['client_id']}", json=grafana(public=True))
    assert "public" in error_of(replaced, 422, "invalid")["fields"]
    error_of(await api.http.post(APPLICATIONS, content=b"{not json"), 422, "invalid")


async def test_a_read_token_reads_and_only_a_settings_token_changes(api: Api) -> None:
    added = await add(api)
    reader = await api.issue("reader", scopes=frozenset({Scope.READ}))
    users_admin = await api.issue("users-admin", scopes=frozenset({Scope.USERS, Scope.READ}))
    listing = await api.http.get(APPLICATIONS, headers=bearer(reader))
    assert [app["client_id"] for app in listing.json()] == [added["client_id"]]
    for token in (reader, users_admin):
        for method, path in [
            ("POST", APPLICATIONS),
            ("PUT", f"{APPLICATIONS}/{added['client_id']}"),
            ("POST", f"{APPLICATIONS}/{added['client_id']}/rotate-secret"),
            ("DELETE", f"{APPLICATIONS}/{added['client_id']}"),
        ]:
            answer = await api.http.request(method, path, json=grafana(), headers=bearer(token))
            error_of(answer, 403, "insufficient_scope")
            assert 'scope="settings"' in answer.headers["www-authenticate"]
    settings_only = await api.issue("settings-only", scopes=frozenset({Scope.SETTINGS}))
    error_of(
        await api.http.get(APPLICATIONS, headers=bearer(settings_only)), 403, "insufficient_scope"
    )
    assert [row.outcome for row in await api.audit("application")] == ["added"]

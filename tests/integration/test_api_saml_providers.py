"""SAML service providers in /api/v1/applications over real HTTP: added from their metadata at
POST /applications/saml, listed and shown beside the OpenID Connect clients with their protocol
and SAML settings, replaced at PUT /applications/saml/{client_id} (metadata too), removed by
the one DELETE, each change audited as the token; and the API's one error shape for bad
metadata (422 by field), a registered entity id (409), a taken name (422), an unknown client
id (404) and a token without the scope a change needs (403)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import ACTOR, TOKEN_NAME, Api, error_of, issue_token
from tests.integration.test_saml_idp import ServiceProviderClient, sp_client
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway
from twofa.domain.api_scopes import Scope

APPLICATIONS = "/applications"
SAML = "/applications/saml"


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


@pytest.fixture
def jira_sp(tmp_path: Path) -> ServiceProviderClient:
    return sp_client(tmp_path, "jira", None)


def jira(sp: ServiceProviderClient, **fields: object) -> dict[str, object]:
    return {"name": "Jira", "metadata": sp.metadata_xml, **fields}


async def add(api: Api, sp: ServiceProviderClient, **fields: object) -> dict[str, Any]:
    answer = await api.http.post(SAML, json=jira(sp, **fields))
    assert answer.status_code == 201, answer.text
    added: dict[str, Any] = answer.json()
    return added


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_added_provider_is_listed_and_shown_with_its_saml_settings(
    api: Api, jira_sp: ServiceProviderClient
) -> None:
    added = await add(api, jira_sp, allowed_groups=["jira-users"], nameid_format="email")
    assert added["protocol"] == "saml"
    assert (added["name"], added["allowed_groups"]) == ("Jira", ["jira-users"])
    assert added["second_factor_required"] is True
    assert added["saml"] == {
        "entity_id": jira_sp.entity_id,
        "acs_urls": [jira_sp.acs_url],
        "slo_urls": [jira_sp.slo_url],
        "signing_certificates": 1,
        "authn_requests_signed": True,
        "nameid_format": "email",
    }
    grafana = {"name": "Grafana", "redirect_uris": ["https://grafana.example.com/cb"]}
    assert (await api.http.post(APPLICATIONS, json=grafana)).status_code == 201

    listing = (await api.http.get(APPLICATIONS)).json()
    by_name = {app["name"]: app for app in listing}
    assert (by_name["Jira"]["protocol"], by_name["Grafana"]["protocol"]) == ("saml", "oidc")
    assert by_name["Jira"]["saml"] == added["saml"]
    assert by_name["Grafana"]["saml"] is None
    shown = (await api.http.get(f"{APPLICATIONS}/{added['client_id']}")).json()
    assert shown == added
    rows = await api.audit("application")
    assert rows[0].outcome == "added"
    assert (rows[0].username, rows[0].detail["protocol"]) == (ACTOR, "saml")


async def test_a_new_provider_needs_a_second_factor_and_a_persistent_nameid_by_default(
    api: Api, jira_sp: ServiceProviderClient
) -> None:
    added = await add(api, jira_sp)
    assert added["second_factor_required"] is True
    assert added["saml"]["nameid_format"] == "persistent"
    assert (added["allowed_users"], added["allowed_groups"]) == ([], [])


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("<not-xml", "the metadata cannot be read"),
        (
            '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
            'entityID="https://jira.example.com"><md:SPSSODescriptor '
            'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            "</md:SPSSODescriptor></md:EntityDescriptor>",
            "no AssertionConsumerService",
        ),
    ],
)
async def test_bad_metadata_is_a_422_on_its_field_and_saves_nothing(
    api: Api, metadata: str, problem: str
) -> None:
    answer = await api.http.post(SAML, json={"name": "Jira", "metadata": metadata})
    error = error_of(answer, 422, "invalid")
    assert problem in error["fields"]["metadata"]
    assert (await api.http.get(APPLICATIONS)).json() == []
    assert await api.audit("application") == []


async def test_a_registered_entity_id_is_a_409_and_a_taken_name_a_422(
    api: Api, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    await add(api, jira_sp)
    again = await api.http.post(SAML, json=jira(jira_sp, name="Jira again"))
    assert jira_sp.entity_id in error_of(again, 409, "conflict")["message"]
    other = sp_client(tmp_path, "confluence", None)
    same_name = await api.http.post(SAML, json=jira(other))
    error = error_of(same_name, 422, "invalid")
    assert "an application named 'Jira' exists" in error["fields"]["name"]
    assert [app["name"] for app in (await api.http.get(APPLICATIONS)).json()] == ["Jira"]


async def test_replace_keeps_or_replaces_the_metadata_and_is_audited(
    api: Api, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    added = await add(api, jira_sp)
    path = f"{SAML}/{added['client_id']}"
    kept = await api.http.put(
        path, json={"name": "Jira DC", "allowed_users": ["alice"], "nameid_format": "email"}
    )
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert (body["client_id"], body["name"], body["allowed_users"]) == (
        added["client_id"],
        "Jira DC",
        ["alice"],
    )
    assert body["saml"]["entity_id"] == jira_sp.entity_id
    assert body["saml"]["nameid_format"] == "email"

    moved = sp_client(tmp_path, "jira-new", None, signs=False)
    replaced = await api.http.put(
        path,
        json={"name": "Jira DC", "metadata": moved.metadata_xml, "second_factor_required": False},
    )
    assert replaced.status_code == 200, replaced.text
    saml = replaced.json()["saml"]
    assert (saml["entity_id"], saml["acs_urls"]) == (moved.entity_id, [moved.acs_url])
    assert saml["authn_requests_signed"] is False
    assert replaced.json()["second_factor_required"] is False

    rows = await api.audit("application")
    assert [row.outcome for row in rows] == ["added", "updated", "updated"]
    assert {row.username for row in rows} == {ACTOR}
    assert rows[1].detail["changed"] == ["name", "allowed_users", "name_id_format"]
    assert {"second_factor_required", "entity_id", "authn_requests_signed"} <= set(
        rows[2].detail["changed"]
    )


async def test_a_refused_replace_changes_nothing(
    api: Api, jira_sp: ServiceProviderClient, tmp_path: Path
) -> None:
    added = await add(api, jira_sp)
    other = sp_client(tmp_path, "confluence", None)
    await add(api, other, name="Confluence")
    path = f"{SAML}/{added['client_id']}"
    taken = await api.http.put(path, json=jira(other, allowed_users=["x"]))
    error_of(taken, 409, "conflict")
    bad = await api.http.put(path, json=jira(jira_sp, metadata="<nope"))
    assert "cannot be read" in error_of(bad, 422, "invalid")["fields"]["metadata"]
    renamed = await api.http.put(path, json={"name": "Confluence"})
    assert "exists" in error_of(renamed, 422, "invalid")["fields"]["name"]
    shown = (await api.http.get(f"{APPLICATIONS}/{added['client_id']}")).json()
    assert shown == added


async def test_each_protocol_is_changed_at_its_own_put(
    api: Api, jira_sp: ServiceProviderClient
) -> None:
    added = await add(api, jira_sp)
    grafana = {"name": "Grafana", "redirect_uris": ["https://grafana.example.com/cb"]}
    client = (await api.http.post(APPLICATIONS, json=grafana)).json()
    as_oidc = await api.http.put(f"{APPLICATIONS}/{added['client_id']}", json=grafana)
    assert "saml application" in error_of(as_oidc, 422, "invalid")["fields"]["protocol"]
    as_saml = await api.http.put(f"{SAML}/{client['client_id']}", json={"name": "Grafana"})
    error_of(as_saml, 404, "not_found")
    rotated = await api.http.post(f"{APPLICATIONS}/{added['client_id']}/rotate-secret")
    error_of(rotated, 422, "invalid")


async def test_delete_removes_a_provider_and_is_audited(
    api: Api, jira_sp: ServiceProviderClient
) -> None:
    added = await add(api, jira_sp)
    removed = await api.http.delete(f"{APPLICATIONS}/{added['client_id']}")
    assert removed.status_code == 204
    assert (await api.http.get(APPLICATIONS)).json() == []
    error_of(await api.http.get(f"{APPLICATIONS}/{added['client_id']}"), 404, "not_found")
    rows = await api.audit("application")
    assert [row.outcome for row in rows] == ["added", "removed"]
    assert rows[1].detail["entity_id"] == jira_sp.entity_id
    assert rows[1].username == ACTOR


async def test_an_unknown_client_id_is_a_404(api: Api, jira_sp: ServiceProviderClient) -> None:
    unknown = "0123456789abcdef"
    error = error_of(await api.http.put(f"{SAML}/{unknown}", json={"name": "X"}), 404, "not_found")
    assert unknown in error["message"]
    error_of(await api.http.delete(f"{APPLICATIONS}/{unknown}"), 404, "not_found")


async def test_a_malformed_body_is_a_422(api: Api) -> None:
    answer = await api.http.post(
        SAML, json={"name": "", "nameid_format": "transient", "entity_id": "mine"}
    )
    error = error_of(answer, 422, "invalid")
    assert {"name", "metadata", "nameid_format", "entity_id"} <= set(error["fields"])


async def test_a_read_token_reads_and_only_a_settings_token_changes(
    api: Api, jira_sp: ServiceProviderClient
) -> None:
    added = await add(api, jira_sp)
    reader = await api.issue("reader", scopes=frozenset({Scope.READ}))
    users_admin = await api.issue("users-admin", scopes=frozenset({Scope.USERS, Scope.READ}))
    listing = await api.http.get(APPLICATIONS, headers=bearer(reader))
    assert [app["saml"]["entity_id"] for app in listing.json()] == [jira_sp.entity_id]
    for token in (reader, users_admin):
        for method, path in [
            ("POST", SAML),
            ("PUT", f"{SAML}/{added['client_id']}"),
            ("DELETE", f"{APPLICATIONS}/{added['client_id']}"),
        ]:
            answer = await api.http.request(
                method, path, json=jira(jira_sp, name="Mine"), headers=bearer(token)
            )
            error_of(answer, 403, "insufficient_scope")
            assert 'scope="settings"' in answer.headers["www-authenticate"]
    assert [row.outcome for row in await api.audit("application")] == ["added"]

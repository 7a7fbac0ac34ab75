"""An application's back-channel logout URI, wherever admins manage applications: the
console's Applications page and /api/v1/applications over real HTTP (the CLI's
`--backchannel-logout-uri` is in tests/unit/cli/test_oidc_backchannel_cli.py). It is checked
as redirect URIs are (https, or http on a loopback host), a refusal is named under its field
and saves nothing, and clearing it stops the application being told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import TOKEN_NAME, Api, error_of, issue_token
from tests.integration.test_console_applications import PAGE, jira, post_form, saved
from tests.support.console import Console, field_problem, field_value, start_console
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway

JIRA_BACKCHANNEL = "https://jira.example.com/plugins/servlet/oidc/backchannel-logout"
GRAFANA = {"name": "Grafana", "redirect_uris": ["https://grafana.example.com/login/oauth"]}


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Console]:
    async with AsyncExitStack() as stack:
        yield await start_console(stack, tmp_path, simulator)


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


async def test_the_console_saves_shows_and_clears_the_backchannel_logout_uri(
    console: Console,
) -> None:
    added = await post_form(console, PAGE, **jira(backchannel_logout_uri=JIRA_BACKCHANNEL))
    assert added.status_code == 200, added.text
    (application,) = await saved(console)
    assert application.backchannel_logout_uri == JIRA_BACKCHANNEL
    edit_page = await console.client.get(f"{PAGE}/{application.client_id}")
    assert field_value(edit_page.text, "backchannel_logout_uri") == JIRA_BACKCHANNEL

    cleared = await post_form(
        console, f"{PAGE}/{application.client_id}", **jira(backchannel_logout_uri="")
    )
    assert cleared.status_code == 303
    (edited,) = await saved(console)
    assert edited.backchannel_logout_uri is None
    (updated,) = [row for row in await console.audit("application") if row.outcome == "updated"]
    assert "backchannel_logout_uri" in updated.detail["changed"]


async def test_the_console_refuses_a_backchannel_uri_in_clear_off_loopback(
    console: Console,
) -> None:
    plain = "http://jira.example.com/backchannel"
    answer = await post_form(console, PAGE, **jira(backchannel_logout_uri=plain))
    assert answer.status_code == 400
    assert "must use https" in field_problem(answer.text, "backchannel_logout_uri")
    assert field_value(answer.text, "backchannel_logout_uri") == plain
    assert await saved(console) == []


async def test_the_api_takes_shows_and_replaces_the_backchannel_logout_uri(api: Api) -> None:
    loopback = "http://127.0.0.1:8080/oidc/backchannel"
    answer = await api.http.post(
        "/applications", json={**GRAFANA, "backchannel_logout_uri": loopback}
    )
    assert answer.status_code == 201, answer.text
    client_id = answer.json()["client_id"]
    assert answer.json()["backchannel_logout_uri"] == loopback
    shown = (await api.http.get(f"/applications/{client_id}")).json()
    assert shown["backchannel_logout_uri"] == loopback

    replaced = await api.http.put(f"/applications/{client_id}", json=GRAFANA)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["backchannel_logout_uri"] is None


async def test_the_api_refuses_a_backchannel_uri_with_a_fragment(api: Api) -> None:
    wrong = "https://grafana.example.com/backchannel#here"
    answer = await api.http.post("/applications", json={**GRAFANA, "backchannel_logout_uri": wrong})
    error = error_of(answer, 422, "invalid")
    assert "must not have a fragment" in error["fields"]["backchannel_logout_uri"]
    assert (await api.http.get("/applications")).json() == []

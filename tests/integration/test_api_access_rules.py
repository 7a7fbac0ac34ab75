"""/api/v1/access/rules over real HTTP: the file's rules listed read-only before the console's,
add, replace (and move), remove, each audited as the token, with the API's one error shape for
a refused rule (400, by field), an unknown id (404) and a malformed body (422)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import ACTOR, TOKEN_NAME, Api, error_of, issue_token
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway

APP = "jira.example.com"
ACCESS = {
    "access": {
        "domains": [APP],
        "rules": [{"domain": APP, "resources": ["/rest/*"], "policy": "bypass"}],
    }
}
RULES = "/access/rules"


@pytest.fixture
async def api(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with (
        sqlite_database(tmp_path) as url,
        running_gateway(url, simulator, extra=ACCESS) as (base_url, settings),
    ):
        token = await issue_token(settings, TOKEN_NAME)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as http:
            yield Api(http, settings, token)


def rule(**fields: object) -> dict[str, object]:
    return {"domains": [APP], "policy": "deny", **fields}


async def test_listing_shows_the_file_rules_then_the_console_rules(api: Api) -> None:
    added = (await api.http.post(RULES, json=rule(groups=["contractors"]))).json()
    listing = (await api.http.get(RULES)).json()
    assert listing["default_policy"] == "deny"
    assert listing["file_rules"] == [
        {
            "position": 1,
            "domains": [APP],
            "policy": "bypass",
            "paths": ["/rest/*"],
            "users": [],
            "groups": [],
            "networks": [],
        }
    ]
    assert [r["id"] for r in listing["console_rules"]] == [added["id"]]
    assert listing["console_rules"][0]["groups"] == ["contractors"]
    assert listing["console_rules"][0]["updated_by"] == ACTOR


async def test_add_replace_move_and_remove_are_audited_as_the_token(api: Api) -> None:
    first = await api.http.post(RULES, json=rule(users=["a"]))
    assert first.status_code == 201, first.text
    second = (await api.http.post(RULES, json=rule(users=["b"], position=1))).json()
    assert second["position"] == 1
    replaced = await api.http.put(
        f"{RULES}/{first.json()['id']}",
        json=rule(policy="two_factor", networks=["10.0.0.0/8"], position=1),
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["position"] == 1
    assert replaced.json()["networks"] == ["10.0.0.0/8"]
    removed = await api.http.delete(f"{RULES}/{second['id']}")
    assert removed.status_code == 204
    listing = (await api.http.get(RULES)).json()["console_rules"]
    assert [(r["id"], r["policy"]) for r in listing] == [(first.json()["id"], "two_factor")]
    rows = await api.audit("access_rule")
    assert [row.outcome for row in rows] == ["added", "added", "updated", "removed"]
    assert {row.username for row in rows} == {ACTOR}


async def test_a_refused_rule_names_each_field_and_saves_nothing(api: Api) -> None:
    answer = await api.http.post(
        RULES, json=rule(domains=["wiki.other.org"], networks=["10.0.0.1/8"])
    )
    error = error_of(answer, 400, "rejected")
    assert "not one of the protected domains" in error["fields"]["domains"]
    assert "did you mean 10.0.0.0/8" in error["fields"]["networks"]
    assert (await api.http.get(RULES)).json()["console_rules"] == []


async def test_an_unknown_rule_is_a_404(api: Api) -> None:
    error = error_of(await api.http.delete(f"{RULES}/4242"), 404, "not_found")
    assert "4242" in error["message"]
    error_of(await api.http.put(f"{RULES}/4242", json=rule()), 404, "not_found")


async def test_a_malformed_body_is_a_422(api: Api) -> None:
    error = error_of(
        await api.http.post(RULES, json={"domains": [], "policy": "allow"}), 422, "invalid"
    )
    assert {"domains", "policy"} <= set(error["fields"])
    error_of(await api.http.delete(f"{RULES}/{2**40}"), 422, "invalid")

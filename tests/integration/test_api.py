"""The REST API over real HTTP: a gateway on loopback with the simulator as Duo, a token made
through the token service, and every route's success, audit record, 401, 404, 409, 422 and
400 answers. Fuzzing and text no database can store: test_api_fuzz.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway
from twofa.clock import FrozenClock
from twofa.config import Settings
from twofa.domain.api_scopes import ALL_SCOPES, Scope
from twofa.services.admin.api_tokens import ApiTokenService
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow

TOKEN_NAME = "ci"
ACTOR = f"token:{TOKEN_NAME}"


async def issue_token(
    settings: Settings,
    name: str,
    *,
    days: int = 90,
    clock: FrozenClock | None = None,
    scopes: frozenset[Scope] = ALL_SCOPES,
    owner: str | None = None,
) -> str:
    """A token made on the command line: every scope unless `scopes` says otherwise."""
    gateway = await Gateway.start(settings)
    try:
        service = ApiTokenService(gateway.db, clock or gateway.clock)
        issued = await service.create(name, created_by="cli", scopes=scopes, days=days, owner=owner)
        return issued.token
    finally:
        await gateway.close()


@dataclass
class Api:
    """An API client holding a valid token, and the settings to read the database behind it."""

    http: httpx.AsyncClient
    settings: Settings
    token: str

    async def issue(
        self,
        name: str,
        *,
        days: int = 90,
        clock: FrozenClock | None = None,
        scopes: frozenset[Scope] = ALL_SCOPES,
    ) -> str:
        return await issue_token(self.settings, name, days=days, clock=clock, scopes=scopes)

    async def audit(self, kind: str) -> list[AuditRow]:
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                query = select(AuditRow).where(AuditRow.kind == kind).order_by(AuditRow.id)
                return list((await db.scalars(query)).all())
        finally:
            await gateway.close()


@asynccontextmanager
async def started_api(database_url: str, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with running_gateway(database_url, simulator) as (base_url, settings):
        token = await issue_token(settings, TOKEN_NAME)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as http:
            yield Api(http, settings, token)


@pytest.fixture
async def api(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with sqlite_database(tmp_path) as url, started_api(url, simulator) as running:
        yield running


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


# --- authentication ---------------------------------------------------------------------------


async def every_operation(api: Api) -> list[tuple[str, str]]:
    document = (await api.http.get("/openapi.json")).json()
    return [
        (method.upper(), path.removeprefix("/api/v1").replace("{", "").replace("}", ""))
        for path, operations in document["paths"].items()
        for method in operations
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic YWRtaW46YWRtaW4=", "Bearer twofa_0123456789abcdef_" + "x" * 43],
)
async def test_every_route_refuses_a_request_without_a_valid_token(
    api: Api, authorization: str | None
) -> None:
    operations = await every_operation(api)
    assert len(operations) >= 20
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=str(api.http.base_url), headers=headers) as stranger:
        for method, path in operations:
            answer = await stranger.request(method, path, json={})
            error_of(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"].startswith("Bearer"), (method, path)


async def test_revoked_and_expired_tokens_are_refused_and_audited(api: Api) -> None:
    revoked = await api.issue("soon-revoked")
    revoked_id = revoked.split("_")[1]
    assert (await api.http.delete(f"/tokens/{revoked_id}")).status_code == 204
    long_ago = FrozenClock(datetime.now(UTC) - timedelta(days=30))
    expired = await api.issue("expired", days=1, clock=long_ago)

    for token in (revoked, expired):
        answer = await api.http.get("/users", headers={"Authorization": f"Bearer {token}"})
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        error_of(answer, 401, "unauthorized")

    refusals = await api.audit("api_token_refused")
    assert [row.outcome for row in refusals] == ["revoked", "expired"]
    assert all(revoked not in str(row.detail) for row in refusals)
    assert refusals[0].detail["token_id"] == revoked_id


# --- users ------------------------------------------------------------------------------------


async def test_create_user_answers_the_user_without_its_password_and_audits_the_token(
    api: Api,
) -> None:
    body = {"username": "carol", "password": "carol-password-1", "email": "c@example.com"}
    answer = await api.http.post("/users", json=body)

    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["username"] == "carol"
    assert created["display_name"] == "carol"
    assert (created["twofa_required"], created["status"]) == (False, ["not required"])
    assert created["locked_until"] is None
    assert "carol-password-1" not in answer.text
    [record] = [row for row in await api.audit("user_add") if row.username == "carol"]
    assert record.detail["actor"] == ACTOR


async def test_user_search_pages_through_matches(api: Api) -> None:
    page = (await api.http.get("/users", params={"q": "li", "limit": 1})).json()
    assert page["total"] == 1
    assert [user["username"] for user in page["items"]] == ["alice"]

    everyone = (await api.http.get("/users", params={"offset": 1, "limit": 1})).json()
    assert (everyone["total"], everyone["offset"], everyone["limit"]) == (2, 1, 1)
    assert [user["username"] for user in everyone["items"]] == ["bob"]


async def test_one_user_shows_why_2fa_is_required(api: Api) -> None:
    alice = (await api.http.get("/users/alice")).json()
    assert alice["groups"] == ["engineering"]
    assert (alice["twofa_required"], alice["twofa_enabled"]) == (True, False)
    assert alice["status"][0] == "required — via group engineering"


async def test_unknown_user_is_404_on_every_user_route(api: Api) -> None:
    for method, path, body in [
        ("GET", "/users/ghost", None),
        ("PATCH", "/users/ghost", {"enabled": False}),
        ("DELETE", "/users/ghost", None),
        ("POST", "/users/ghost/reset-2fa", None),
        ("POST", "/users/ghost/unlock", None),
        ("PUT", "/users/ghost/twofa", {"enabled": True}),
    ]:
        error = error_of(await api.http.request(method, path, json=body), 404, "not_found")
        assert "ghost" in error["message"], (method, path)


async def test_duplicate_user_is_409(api: Api) -> None:
    error = error_of(await api.http.post("/users", json={"username": "bob"}), 409, "conflict")
    assert "already exists" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "two words"}, "username"),
        ({"username": ""}, "username"),
        ({}, "username"),
        ({"username": "dave", "is_admin": "maybe"}, "is_admin"),
        ({"username": "dave", "role": "admin"}, "role"),
        ({"username": "dave", "password": "nul\u0000inside"}, "password"),
    ],
)
async def test_invalid_new_user_is_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    error = error_of(await api.http.post("/users", json=body), 422, "invalid")
    assert field in error["fields"]
    assert "nul\u0000inside" not in str(error)  # input is never echoed: it may be a password


async def test_disable_set_password_and_enable_again(api: Api) -> None:
    disabled = await api.http.patch(
        "/users/bob", json={"enabled": False, "password": "new-bob-password-1"}
    )
    assert disabled.json()["enabled"] is False
    enabled = await api.http.patch("/users/bob", json={"enabled": True})
    assert enabled.json()["enabled"] is True
    for kind in ("user_disable", "user_password", "user_enable"):
        [record] = await api.audit(kind)
        assert (record.username, record.detail["actor"]) == ("bob", ACTOR), kind


async def test_delete_user(api: Api) -> None:
    answer = await api.http.delete("/users/bob")
    assert answer.status_code == 204
    error_of(await api.http.get("/users/bob"), 404, "not_found")
    [record] = await api.audit("user_delete")
    assert record.detail["actor"] == ACTOR


async def test_reset_second_factor_unlock_and_user_2fa_switch(api: Api) -> None:
    reset = await api.http.post("/users/alice/reset-2fa")
    assert reset.json()["status"][-1] == "not enrolled yet: sets up Duo Push at the next sign-in"
    assert (await api.http.post("/users/bob/unlock")).json() == {"was_locked": False}
    switched = (await api.http.put("/users/bob/twofa", json={"enabled": True})).json()
    assert (switched["twofa_required"], switched["status"][0]) == (
        True,
        "required — set for the user",
    )
    for kind, username in (
        ("user_reset_2fa", "alice"),
        ("user_unlock", "bob"),
        ("policy_user", "bob"),
    ):
        [record] = await api.audit(kind)
        assert (record.username, record.detail["actor"]) == (username, ACTOR), kind


# --- groups -----------------------------------------------------------------------------------


async def test_groups_create_list_members_and_2fa_switch(api: Api) -> None:
    created = await api.http.post("/groups", json={"name": "sales"})
    assert created.status_code == 201
    assert created.json() == {"name": "sales", "twofa_enabled": False, "members": []}
    added = (await api.http.put("/groups/sales/members/bob")).json()
    assert added == {"group": "sales", "username": "bob", "member": True, "changed": True}
    assert (await api.http.put("/groups/sales/members/bob")).json()["changed"] is False
    switched = (await api.http.put("/groups/sales/twofa", json={"enabled": True})).json()
    assert switched == {"name": "sales", "twofa_enabled": True, "members": ["bob"]}
    assert (await api.http.get("/users/bob")).json()["status"][0] == "required — via group sales"
    removed = (await api.http.delete("/groups/sales/members/bob")).json()
    assert (removed["member"], removed["changed"]) == (False, True)

    names = [group["name"] for group in (await api.http.get("/groups")).json()]
    assert names == ["engineering", "sales"]
    for kind in ("group_add", "group_add_member", "policy_group", "group_remove_member"):
        [record] = [row for row in await api.audit(kind) if row.detail["group"] == "sales"]
        assert record.detail["actor"] == ACTOR, kind


async def test_group_errors(api: Api) -> None:
    error_of(await api.http.post("/groups", json={"name": "engineering"}), 409, "conflict")
    error_of(await api.http.post("/groups", json={"name": "   "}), 422, "invalid")
    error_of(await api.http.get("/groups/nobody"), 404, "not_found")
    error_of(await api.http.put("/groups/nobody/members/bob"), 404, "not_found")
    error_of(await api.http.put("/groups/engineering/members/ghost"), 404, "not_found")
    error_of(await api.http.put("/groups/nobody/twofa", json={"enabled": True}), 404, "not_found")


# --- settings ---------------------------------------------------------------------------------


def duo_body(simulator: RunningSimulator, **changes: Any) -> dict[str, Any]:
    return {
        "ikey": simulator.ikey,
        "secret_key": simulator.skey,
        "api_hostname": simulator.base_url,
        "failmode": "safe",
        **changes,
    }


async def test_duo_settings_never_show_the_secret_key(
    api: Api, simulator: RunningSimulator
) -> None:
    before = (await api.http.get("/settings/duo")).json()
    assert (before["source"], before["secret_key_set"]) == ("file", True)

    saved = await api.http.put("/settings/duo", json=duo_body(simulator))

    assert saved.status_code == 200, saved.text
    assert saved.json()["source"] == "console"
    assert saved.json()["failmode"] == "safe"
    after = await api.http.get("/settings/duo")
    for answer in (saved, after):
        assert simulator.skey not in answer.text
        assert answer.json()["secret_key_set"] is True
    [record] = await api.audit("settings_duo")
    assert (record.outcome, record.username) == ("saved", ACTOR)
    assert simulator.skey not in str(record.detail)


async def test_duo_settings_without_a_secret_key_keep_the_stored_one(
    api: Api, simulator: RunningSimulator
) -> None:
    await api.http.put("/settings/duo", json=duo_body(simulator))
    kept = await api.http.put("/settings/duo", json=duo_body(simulator, secret_key=None))
    assert kept.status_code == 200, kept.text
    tested = (await api.http.post("/settings/duo/test")).json()
    assert (tested["ok"], tested["problems"]) == (True, {})


async def test_duo_push_fatigue_settings_round_trip(api: Api, simulator: RunningSimulator) -> None:
    before = (await api.http.get("/settings/duo")).json()
    assert (before["pushes_per_day"], before["fraud_pause_minutes"]) == (20, 60)

    body = duo_body(simulator, pushes_per_day=8, fraud_pause_minutes=240)
    saved = await api.http.put("/settings/duo", json=body)

    assert saved.status_code == 200, saved.text
    after = (await api.http.get("/settings/duo")).json()
    assert (after["pushes_per_day"], after["fraud_pause_minutes"]) == (8, 240)
    for name, value in (("pushes_per_day", 501), ("fraud_pause_minutes", 0)):
        refused = await api.http.put("/settings/duo", json=duo_body(simulator, **{name: value}))
        assert name in str(error_of(refused, 422, "invalid")["fields"])
    assert (await api.http.get("/settings/duo")).json()["pushes_per_day"] == 8


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"secret_key": "w" * 40}, {"secret_key"}),
        ({"secret_key": "short"}, {"secret_key"}),
        ({"ikey": "nope", "api_hostname": "ftp://x"}, {"ikey", "api_hostname"}),
        ({"api_hostname": "["}, {"api_hostname"}),
    ],
)
async def test_refused_duo_settings_are_400_by_field_and_keep_the_old_ones(
    api: Api, simulator: RunningSimulator, changes: dict[str, Any], fields: set[str]
) -> None:
    answer = await api.http.put("/settings/duo", json=duo_body(simulator, **changes))
    assert set(error_of(answer, 400, "rejected")["fields"]) == fields
    assert (await api.http.get("/settings/duo")).json()["source"] == "file"


async def test_duo_test_reports_the_clock_skew_or_what_is_wrong(
    api: Api, simulator: RunningSimulator
) -> None:
    working = (await api.http.post("/settings/duo/test")).json()
    assert (working["ok"], working["problems"]) == (True, {})
    assert abs(working["clock_skew_s"]) < 60

    simulator.control.post("/_sim/faults", json={"endpoints": ["check"], "status": 503})
    broken = (await api.http.post("/settings/duo/test")).json()

    assert (broken["ok"], broken["clock_skew_s"]) == (False, None)
    assert set(broken["problems"]) == {"api_hostname"}


async def test_two_factor_settings_round_trip(api: Api) -> None:
    default = (await api.http.get("/settings/two-factor")).json()
    assert default["methods"] == ["duo_push"]
    wanted = {**default, "enforcement": "everyone", "grace_days": 7}

    saved = await api.http.put("/settings/two-factor", json=wanted)

    assert saved.json() == wanted
    assert (await api.http.get("/settings/two-factor")).json() == wanted
    [record] = await api.audit("settings_two_factor")
    assert record.username == ACTOR


async def test_two_factor_settings_refusals(api: Api) -> None:
    current = (await api.http.get("/settings/two-factor")).json()
    unknown = await api.http.put("/settings/two-factor", json={**current, "methods": ["sms"]})
    assert set(error_of(unknown, 400, "rejected")["fields"]) >= {"methods", "first_method"}
    too_long = await api.http.put("/settings/two-factor", json={**current, "grace_days": 400})
    assert "grace_days" in error_of(too_long, 422, "invalid")["fields"]


# --- audit ------------------------------------------------------------------------------------


async def test_audit_filters_and_pages(api: Api) -> None:
    await api.http.put("/users/bob/twofa", json={"enabled": True})
    await api.http.put("/users/bob/twofa", json={"enabled": False})
    answer = await api.http.get("/audit", params={"user": "bob", "kind": "policy_user"})
    page = answer.json()
    assert page["total"] == 2
    assert [event["detail"]["after"] for event in page["items"]] == [False, True]  # newest first
    assert page["items"][0]["detail"]["actor"] == ACTOR

    second = (await api.http.get("/audit", params={"user": "bob", "offset": 1})).json()
    assert second["items"][0]["id"] < page["items"][0]["id"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await api.http.get("/audit", params={"since": future})).json()["total"] == 0
    assert (await api.http.get("/audit", params={"until": future})).json()["total"] > 2
    assert (await api.http.get("/audit", params={"outcome": "nope"})).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [{"since": "2026-01-01T00:00:00"}, {"until": "0001-01-01T00:00:00+01:00"}, {"limit": 0}],
)
async def test_audit_refuses_naive_or_impossible_times_and_bad_pages(
    api: Api, params: dict[str, Any]
) -> None:
    error = error_of(await api.http.get("/audit", params=params), 422, "invalid")
    assert set(error["fields"]) == set(params)


# --- tokens -----------------------------------------------------------------------------------


async def test_token_created_over_the_api_is_shown_once_and_works(api: Api) -> None:
    answer = await api.http.post("/tokens", json={"name": "deploy", "days": 7})
    assert answer.status_code == 201
    created = answer.json()
    secret = created.pop("token")
    assert secret.startswith(f"twofa_{created['id']}_")
    assert created["created_by"] == ACTOR
    assert created["active"] is True

    listing = await api.http.get("/tokens")
    assert secret not in listing.text
    assert [token["name"] for token in listing.json()] == [TOKEN_NAME, "deploy"]
    used = await api.http.get("/users/bob", headers={"Authorization": f"Bearer {secret}"})
    assert used.status_code == 200
    records = await api.audit("api_token_create")
    assert [row.detail["actor"] for row in records] == ["cli", ACTOR]  # the first: the service
    assert secret not in str(records[1].detail)


async def test_token_errors(api: Api) -> None:
    error_of(await api.http.post("/tokens", json={"name": TOKEN_NAME}), 409, "conflict")
    error_of(await api.http.post("/tokens", json={"name": "x", "days": 366}), 422, "invalid")
    error_of(await api.http.delete("/tokens/0123456789abcdef"), 404, "not_found")
    error_of(await api.http.delete("/tokens/not-an-id"), 422, "invalid")


async def test_a_token_may_revoke_itself_and_is_then_refused(api: Api) -> None:
    [mine] = (await api.http.get("/tokens")).json()
    assert (await api.http.delete(f"/tokens/{mine['id']}")).status_code == 204
    error_of(await api.http.get("/tokens"), 401, "unauthorized")
    [record] = await api.audit("api_token_revoke")
    assert record.detail == {
        "actor": ACTOR,
        "token_id": mine["id"],
        "name": TOKEN_NAME,
        "expires_at": record.detail["expires_at"],
    }


# --- the API as a whole -----------------------------------------------------------------------


async def test_unknown_path_and_method_answer_in_the_error_shape(api: Api) -> None:
    error_of(await api.http.get("/nothing/here"), 404, "not_found")
    wrong_method = await api.http.post("/users/bob")
    error_of(wrong_method, 405, "method_not_allowed")
    assert set(wrong_method.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
    bad_json = await api.http.post(
        "/users", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    error_of(bad_json, 422, "invalid")


async def test_openapi_document_describes_only_the_api_with_bearer_auth(api: Api) -> None:
    answer = await api.http.get("/openapi.json", headers={"Authorization": ""})
    document = answer.json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert all(path.startswith("/api/v1/") for path in document["paths"])
    assert "/api/v1/openapi.json" not in document["paths"]
    create_user = document["paths"]["/api/v1/users"]["post"]
    assert create_user["security"] == [{"HTTPBearer": []}]
    assert create_user["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    duo_out = document["components"]["schemas"]["DuoSettingsOut"]["properties"]
    assert "secret_key" not in duo_out
    assert "secret_key_set" in duo_out


async def test_tokens_never_reach_the_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = (await api.http.post("/tokens", json={"name": "logged?"})).json()
    await api.http.get("/users", headers={"Authorization": f"Bearer {created['token']}"})
    await api.http.get("/users", headers={"Authorization": f"Bearer {api.token}x"})
    assert caplog.records, "the API logged nothing at all: this test would prove nothing"
    for secret in (api.token, created["token"]):
        assert secret not in caplog.text
        # twofa_<hex id>_<random>: the random part may itself contain "_"
        assert secret.split("_", 2)[2] not in caplog.text

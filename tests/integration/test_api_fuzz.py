"""Bad input never makes the API answer 5xx. Schemathesis reads the served
/api/v1/openapi.json and throws valid and invalid requests at every operation of a live gateway
with a valid token, on SQLite and on PostgreSQL; the run is bounded and derandomized, so it is
the same run each time and takes seconds. Text no database can store is checked by hand too."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import RunningSimulator
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import gateway_settings, seed_users
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings
from twofa.domain.api_scopes import ALL_SCOPES
from twofa.services.admin.api_tokens import ApiTokenService
from twofa.services.runtime import Gateway
from twofa.web.api import openapi_document
from twofa.web.app import create_app

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (it is in the dev extras: .[dev])"
)

EXAMPLES_PER_OPERATION = 15


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    token: str
    simulator_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def seeded_with_token(settings: Settings) -> str:
    await seed_users(settings)
    gateway = await Gateway.start(settings)
    try:
        service = ApiTokenService(gateway.db, gateway.clock)
        return (await service.create("fuzz", created_by="cli", scopes=ALL_SCOPES)).token
    finally:
        await gateway.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    simulator_server: RunningSimulator,
) -> Iterator[LiveApi]:
    """One gateway per database for the whole module; its own event loop creates and drops
    the database around the served app, which runs in a thread."""
    database: AbstractAsyncContextManager[str] = (
        sqlite_database(tmp_path_factory.mktemp("fuzz"))
        if request.param == "sqlite"
        else postgres_database()
    )
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(database.__aenter__())
        try:
            port = free_port()
            settings = gateway_settings(url, simulator_server, port)
            token = loop.run_until_complete(seeded_with_token(settings))
            with serve_in_thread(create_app(settings), port=port) as base_url:
                yield LiveApi(base_url, token, simulator_server.base_url)
        finally:
            loop.run_until_complete(database.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.fixture(scope="module")
def live_schema(live_api: LiveApi) -> Any:
    """Loaded from the served document, as a client of the API would."""
    return schemathesis.openapi.from_url(f"{live_api.base_url}/api/v1/openapi.json")


def keep_on_loopback(case: Any, live_api: LiveApi) -> None:
    """A fuzzed Duo API hostname or mail server could be a real host; tests talk to this
    machine only, and a test e-mail to a fuzzed server gives up quickly."""
    if not isinstance(case.body, dict):
        return
    if "api_hostname" in case.body:
        case.body["api_hostname"] = live_api.simulator_url
    if "host" in case.body and "from_address" in case.body:
        case.body["host"] = "127.0.0.1"
        case.body["timeout_s"] = 2


# Schemathesis' own pytest plugin fails on pytest 9 (`Function` has no `_nodeid`), so each
# operation is a parametrized test here, driven through schemathesis' strategies.
OPERATIONS = [
    (method.upper(), path)
    for path, operations in openapi_document()["paths"].items()
    for method in operations
]


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(
    ("method", "path"), OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS]
)
def test_no_api_operation_answers_5xx(
    live_schema: Any, live_api: LiveApi, method: str, path: str, mode: str
) -> None:
    operation = live_schema[path][method]
    answers: list[int] = []

    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        keep_on_loopback(case, live_api)
        response = case.call(base_url=live_api.base_url, headers=live_api.headers, timeout=30)
        answers.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )

    call()
    assert answers, "schemathesis generated no request"


UNSTORABLE_TEXT: list[tuple[str, str, dict[str, Any] | None, bytes]] = [
    ("GET", "/users", {"q": "a\u0000b"}, b""),
    ("GET", "/users/a%00b", None, b""),
    ("POST", "/users", None, b'{"username": "nul\\u0000user"}'),
    ("POST", "/users", None, b'{"username": "lone", "display_name": "\\ud800"}'),
    ("POST", "/groups", None, b'{"name": "g\\u0000"}'),
    ("GET", "/audit", {"kind": "\u0000", "offset": 10**30}, b""),
    ("PUT", "/settings/two-factor", None, b'{"methods": ["\\u0000"], "first_method": "x"}'),
]


def test_text_no_database_can_store_is_422_not_500(live_api: LiveApi) -> None:
    headers = {**live_api.headers, "Content-Type": "application/json"}
    with httpx.Client(base_url=f"{live_api.base_url}/api/v1", headers=headers) as client:
        for method, path, params, body in UNSTORABLE_TEXT:
            answer = client.request(method, path, params=params, content=body or None)
            assert answer.status_code == 422, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "invalid"


def test_unparsable_duo_hostname_is_refused_by_field(live_api: LiveApi) -> None:
    body = {"ikey": "DIXXXXXXXXXXXXXXXXXX", "api_hostname": "[", "secret_key": "s" * 40}
    with httpx.Client(base_url=live_api.base_url, headers=live_api.headers) as client:
        answer = client.put("/api/v1/settings/duo", json=body)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()["error"]["fields"]) == {"api_hostname"}

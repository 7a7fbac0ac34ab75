"""Pointing the Duo API hostname away from Duo, as an admin, or whoever holds a stolen admin
session or API token, would, to probe the internal network from the gateway: over real HTTP on
SQLite and PostgreSQL, through the console's Advanced Settings, the JSON API and `twofa duo set`.

In production only Duo's own hosts are accepted, so the gateway never even dials a loopback
service, an internal host or a look-alike name; with `duo.allow_custom_host` it may, and what
such a host answers still never reaches the admin (no read-back, no port-scan oracle)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from tests.conftest import RunningSimulator
from tests.integration.test_api import issue_token
from tests.support.admin_sign_in import sign_in_admin
from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.console import ADVANCED, field_problem
from tests.support.gateway import SECRET, gateway_settings, running_gateway, sign_in
from tests.support.servers import free_port
from tests.support.totp_flow import submit_code
from twofa.cli.main import app
from twofa.config import Settings
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway
from twofa.services.settings.duo import DuoConsoleConfig
from twofa.services.settings.two_factor import TwoFactorConfig

pytestmark = pytest.mark.integration
ADMIN, ADMIN_PASSWORD = "duoadmin", "duo-admin-password-1"
NOT_DUO = "is not a Duo API host"
INTERNAL_SECRET = "INTERNAL-BANNER-4c1d"  # what the internal service would give away


@dataclass
class InternalService:
    """A service on the gateway's machine that answers any request with its secrets."""

    port: int
    connections: list[int] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        """The API hostnames an attacker would try: this service, an internal host, and a
        name that starts like Duo's but is the attacker's."""
        return [
            f"http://127.0.0.1:{self.port}",
            "https://internal.example:8443",
            "api-x.duosecurity.com.evil.test",
        ]


@asynccontextmanager
async def internal_service() -> AsyncIterator[InternalService]:
    service = InternalService(free_port())
    body = json.dumps({"stat": "FAIL", "code": 50000, "message": INTERNAL_SECRET}).encode()
    head = (
        f"HTTP/1.1 500 {INTERNAL_SECRET}\r\nX-Banner: {INTERNAL_SECRET}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        service.connections.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", service.port)
    try:
        yield service
    finally:
        server.close()
        await server.wait_closed()


async def saved_duo(settings: Settings) -> DuoConsoleConfig | None:
    gateway = await Gateway.start(settings)
    try:
        return await gateway.console.duo()
    finally:
        await gateway.close()


def duo_form(simulator: RunningSimulator, host: str, csrf: str) -> dict[str, str]:
    return {
        "ikey": simulator.ikey,
        "skey": simulator.skey,
        "api_hostname": host,
        "failmode": "secure",
        "push_type": "Login request",
        "application_name": "Attack",
        "pushes_per_minute": "3",
        "pushes_per_day": "20",
        "fraud_pause_minutes": "60",
        "csrf_token": csrf,
    }


async def post_duo_form(
    client: httpx.AsyncClient, simulator: RunningSimulator, host: str
) -> httpx.Response:
    page = await client.get(ADVANCED)
    assert page.status_code == 200, page.text
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return await client.post(ADVANCED, data=duo_form(simulator, host, csrf))


def duo_body(simulator: RunningSimulator, host: str) -> dict[str, Any]:
    return {"ikey": simulator.ikey, "secret_key": simulator.skey, "api_hostname": host}


def twofa(database_url: str, *args: str, allow_custom_host: bool, input: str) -> Result:
    """`twofa ARGS` as an admin runs it on a production gateway's machine."""
    env = {"TWOFA_MODE": "production", "TWOFA_SECRET_KEY": SECRET}
    env |= {"TWOFA_DATABASE_URL": database_url, "TWOFA_DUO__API_HOSTNAME": ""}
    if allow_custom_host:
        env["TWOFA_DUO__ALLOW_CUSTOM_HOST"] = "true"
    return CliRunner().invoke(app, list(args), env=env, input=input)


async def cli_duo_set(
    database_url: str, simulator: RunningSimulator, host: str, *, allow_custom_host: bool
) -> Result:
    args = ("duo", "set", "--ikey", simulator.ikey, "--skey-stdin", "--host", host)
    return await asyncio.to_thread(  # the CLI runs its own event loop
        twofa, database_url, *args, allow_custom_host=allow_custom_host, input=simulator.skey
    )


@pytest.fixture(autouse=True)
def no_twofa_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own TWOFA_* variables must not leak into the CLI runs."""
    import os

    for name in list(os.environ):
        if name.startswith("TWOFA_"):
            monkeypatch.delenv(name)


# ---- production, custom hosts not allowed: refused everywhere, nothing dialled or saved ----


async def prepare_authenticator_admin(database_url: str, simulator: RunningSimulator) -> None:
    """An admin whose second factor is an authenticator app: production allows no simulator,
    so Duo Push cannot be the admin's way in."""
    settings = gateway_settings(database_url, simulator, free_port(), "production", api_hostname="")
    gateway = await Gateway.start(settings)
    try:
        methods = TwoFactorConfig(methods=("totp",), first_method="totp")
        await gateway.console.save_two_factor(methods, "setup", CLI)
        await gateway.accounts.add_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
    finally:
        await gateway.close()


async def sign_in_with_authenticator(client: httpx.AsyncClient) -> None:
    answer = await sign_in(client, ADMIN, ADMIN_PASSWORD)
    assert answer.headers["location"] == "/2fa", "an admin's sign-in asks for a second factor"
    page = await client.get("/2fa/m/totp/enrol")
    assert page.status_code == 200, page.text
    enrolled = await submit_code(
        client, "/2fa/m/totp/enrol", page, code_at(secret_from_page(page.text))
    )
    assert enrolled.status_code == 303, enrolled.text
    assert (await client.get(ADVANCED)).status_code == 200


async def test_attack_admin_points_duo_at_an_internal_host_in_the_console_is_refused(
    database_url: str, simulator: RunningSimulator
) -> None:
    await prepare_authenticator_admin(database_url, simulator)
    async with (
        internal_service() as service,
        running_gateway(database_url, simulator, "production", api_hostname="") as (
            base_url,
            settings,
        ),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await sign_in_with_authenticator(client)
        for host in service.hosts:
            answer = await post_duo_form(client, simulator, host)

            assert answer.status_code == 400, host
            problem = field_problem(answer.text, "api_hostname")
            assert NOT_DUO in problem, host
            assert "duo.allow_custom_host" in problem
        assert service.connections == []  # never dialled
        assert await saved_duo(settings) is None


async def test_attack_stolen_api_token_points_duo_at_an_internal_host_is_refused(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with (
        internal_service() as service,
        running_gateway(database_url, simulator, "production", api_hostname="") as (
            base_url,
            settings,
        ),
    ):
        token = await issue_token(settings, "stolen")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as api:
            for host in service.hosts:
                answer = await api.put("/settings/duo", json=duo_body(simulator, host))

                assert answer.status_code == 400, answer.text
                error = answer.json()["error"]
                assert error["code"] == "rejected"
                assert set(error["fields"]) == {"api_hostname"}
                assert NOT_DUO in error["fields"]["api_hostname"]
            assert (await api.get("/settings/duo")).json()["source"] == "none"
        assert service.connections == []
        assert await saved_duo(settings) is None


async def test_attack_cli_points_duo_at_an_internal_host_is_refused(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with internal_service() as service:
        for host in service.hosts:
            result = await cli_duo_set(database_url, simulator, host, allow_custom_host=False)

            assert result.exit_code == 2, result.output
            assert "--host: " in result.stderr
            assert NOT_DUO in result.stderr
            assert "duo.allow_custom_host" in result.stderr
        assert service.connections == []
    settings = gateway_settings(database_url, simulator, free_port(), "production", api_hostname="")
    assert await saved_duo(settings) is None


# ---- production with duo.allow_custom_host: accepted, and a foreign host's answer hidden ----


async def test_with_allow_custom_host_the_console_api_and_cli_accept_another_host(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with running_gateway(database_url, simulator, "production", allow_custom_host=True) as (
        base_url,
        settings,
    ):
        gateway = await Gateway.start(settings)
        try:
            await gateway.accounts.add_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
        finally:
            await gateway.close()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await sign_in_admin(client, simulator, ADMIN, ADMIN_PASSWORD)
            saved = await post_duo_form(client, simulator, simulator.base_url)
            assert saved.status_code == 303, field_problem(saved.text, "api_hostname")
        token = await issue_token(settings, "ci")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as api:
            put = await api.put("/settings/duo", json=duo_body(simulator, simulator.base_url))
            assert put.status_code == 200, put.text
    result = await cli_duo_set(database_url, simulator, simulator.base_url, allow_custom_host=True)
    assert result.exit_code == 0, result.output
    stored = await saved_duo(settings)
    assert stored is not None
    assert stored.api_hostname == simulator.base_url


async def test_attack_a_foreign_hosts_answer_never_reaches_the_admin(
    database_url: str, simulator: RunningSimulator
) -> None:
    async with (
        internal_service() as service,
        running_gateway(database_url, simulator, "production", allow_custom_host=True) as (
            base_url,
            settings,
        ),
    ):
        gateway = await Gateway.start(settings)
        try:
            await gateway.accounts.add_user(ADMIN, ADMIN_PASSWORD, is_admin=True)
        finally:
            await gateway.close()
        target = service.hosts[0]
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await sign_in_admin(client, simulator, ADMIN, ADMIN_PASSWORD)
            page = await post_duo_form(client, simulator, target)
        token = await issue_token(settings, "ci")
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"{base_url}/api/v1", headers=headers) as api:
            api_answer = await api.put("/settings/duo", json=duo_body(simulator, target))
        cli = await cli_duo_set(database_url, simulator, target, allow_custom_host=True)

        assert len(service.connections) == 3  # it was asked, once per way in
        assert page.status_code == 400
        assert "did not answer as the Duo Auth API does" in field_problem(page.text, "api_hostname")
        assert api_answer.status_code == 400
        assert cli.exit_code == 2
        for shown in (page.text, api_answer.text, cli.output):
            assert INTERNAL_SECRET not in shown
        assert await saved_duo(settings) is None

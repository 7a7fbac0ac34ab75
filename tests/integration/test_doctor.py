"""`twofa doctor` against real parts: the simulator over HTTP, a real SMTP server, Redis, a
Crowd stand-in and slapd. Each part that answers is ok, each that does not says why, and one
failing check never hides the others."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import RunningSimulator
from tests.integration.test_api import started_api
from tests.support.crowd_standin import CrowdStandIn
from tests.support.databases import sqlite_database
from tests.support.email_otp_flow import smtp_edit
from tests.support.gateway import gateway_settings
from tests.support.redis_server import reachable_redis
from tests.support.revocation import database
from tests.support.servers import free_port, serve_in_thread
from tests.support.slapd import BASE_DN, SERVICE_DN, SERVICE_PASSWORD, RunningSlapd, running_slapd
from tests.support.smtp import SmtpServer
from twofa.cli.main import app
from twofa.clock import Clock, SystemClock
from twofa.domain.client import NO_CLIENT
from twofa.services.doctor import Finding, State, examine
from twofa.services.runtime import Gateway

pytestmark = pytest.mark.integration
CROWD_APP = ("twofa", "crowd-app-password")


@pytest.fixture(scope="module")
def crowd_url() -> Iterator[str]:
    standin = CrowdStandIn(application_name=CROWD_APP[0], application_password=CROWD_APP[1])
    with serve_in_thread(standin.app) as origin:
        yield origin


async def started(
    database_url: str,
    simulator: RunningSimulator,
    duo: dict[str, str] | None = None,
    clock: Clock | None = None,
    **extra: Any,
) -> Gateway:
    settings = gateway_settings(database_url, simulator, free_port(), extra=extra, **(duo or {}))
    return await Gateway.start(settings, verify_schema=False, clock=clock)


def configure_cli(
    monkeypatch: pytest.MonkeyPatch, database_url: str, simulator: RunningSimulator
) -> None:
    for name, value in {
        "TWOFA_DATABASE_URL": database_url,
        "TWOFA_MODE": "dev",
        "TWOFA_DUO__IKEY": simulator.ikey,
        "TWOFA_DUO__SKEY": simulator.skey,
        "TWOFA_DUO__API_HOSTNAME": simulator.base_url,
    }.items():
        monkeypatch.setenv(name, value)


def by_part(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.part: finding for finding in findings}


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    async with sqlite_database(tmp_path) as url:
        yield url


async def test_every_part_that_answers_is_ok(
    database_url: str, simulator: RunningSimulator, mail: SmtpServer, crowd_url: str
) -> None:
    redis_url = await reachable_redis()
    gateway = await started(
        database_url,
        simulator,
        redis_url=redis_url,
        directories=["local", "crowd"],
        crowd={
            "url": crowd_url,
            "application_name": CROWD_APP[0],
            "application_password": CROWD_APP[1],
        },
    )
    try:
        await gateway.smtp.save(smtp_edit(mail), "test-admin", NO_CLIENT)
        findings = by_part(await examine(gateway))
    finally:
        await gateway.close()

    assert list(findings) == [
        "database",
        "Duo",
        "Duo alerts",
        "sign-in attacks",
        "mail server",
        "secret keys",
        "clock",
        "change feed",
        "directory crowd",
    ]
    assert {part: f.state for part, f in findings.items()} == dict.fromkeys(findings, State.OK)
    assert "up to date" in findings["database"].detail
    assert "Duo's clock is" in findings["Duo"].detail
    assert f"{mail.host}:{mail.port} answered" in findings["mail server"].detail
    assert mail.received == []  # the check signs in and leaves: nothing is sent


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize(
    ("ahead_s", "state"),
    [(0.0, State.OK), (-10.0, State.WARNING), (45.0, State.FAILED)],
)
async def test_a_node_whose_clock_is_off_from_the_database_server_is_told_so(
    kind: str, ahead_s: float, state: State, tmp_path: Path, simulator: RunningSimulator
) -> None:
    """Nodes check authenticator codes and end sessions by their own clocks, so they must agree;
    the database server's, which they all reach, is the yardstick."""
    async with database(kind, tmp_path) as url:
        gateway = await started(url, simulator, clock=ClockAhead(ahead_s))
        try:
            clock = by_part(await examine(gateway))["clock"]
        finally:
            await gateway.close()

    assert clock.state is state, clock
    said = re.search(r"clock is ([+-]\d+\.\d) s from the database server's", clock.detail)
    assert said is not None, clock.detail
    assert abs(float(said.group(1)) - ahead_s) < 1.0
    assert ("NTP" in clock.detail) is (state is not State.OK)


class ClockAhead(SystemClock):
    def __init__(self, seconds: float) -> None:
        self._ahead = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return super().now() + self._ahead


async def test_parts_that_do_not_answer_each_say_why_and_the_rest_still_run(
    database_url: str, simulator: RunningSimulator, mail: SmtpServer, crowd_url: str
) -> None:
    closed = free_port()
    gateway = await started(
        database_url,
        simulator,
        redis_url=f"redis://127.0.0.1:{closed}/0",
        directories=["local", "crowd"],
        crowd={
            "url": crowd_url,
            "application_name": CROWD_APP[0],
            "application_password": "not-the-password",
        },
        duo={"skey": "wrong" * 8},
    )
    try:
        await gateway.smtp.save(smtp_edit(mail, port=str(closed)), "test-admin", NO_CLIENT)
        findings = by_part(await examine(gateway))
    finally:
        await gateway.close()

    assert findings["database"].state is State.OK
    for part in ("Duo", "mail server", "change feed", "directory crowd"):
        assert findings[part].state is State.FAILED, findings[part]
    assert "skey" in findings["Duo"].detail
    assert str(closed) in findings["mail server"].detail
    assert "redis feed not live" in findings["change feed"].detail
    assert "every second" in findings["change feed"].detail


async def test_an_unmigrated_database_is_named_with_the_command_that_fixes_it(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    gateway = await started(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", simulator)
    try:
        findings = by_part(await examine(gateway))
    finally:
        await gateway.close()
    assert findings["database"].state is State.FAILED
    assert "twofa db upgrade" in findings["database"].detail
    assert findings["Duo"].state is State.NOT_CHECKED  # its keys are read from the database
    assert findings["Duo alerts"].state is State.NOT_CHECKED  # read from the audit log
    assert findings["sign-in attacks"].state is State.NOT_CHECKED  # read from the audit log
    assert findings["mail server"].state is State.NOT_CHECKED
    assert findings["change feed"].state is State.OK  # checked all the same (sockets, here)
    assert findings["clock"].state is State.OK  # the server answers, migrated or not


def test_the_command_prints_a_line_per_part_and_exits_1_when_one_failed(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_cli(monkeypatch, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", simulator)

    result = CliRunner().invoke(app, ["doctor"])

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("FAILED  database")
    assert "twofa db upgrade" in lines[0]
    assert lines[1].startswith("?       Duo")
    assert lines[2].startswith("?       Duo alerts")
    assert lines[3].startswith("?       sign-in attacks")
    assert lines[4].startswith("?       mail server")
    assert lines[5].startswith("?       secret keys")
    assert lines[6].startswith("ok      clock")
    assert lines[7].startswith("ok      change feed")
    assert lines[-1] == "1 of 8 checks failed: database"


def test_the_command_exits_0_when_nothing_failed(
    database_url: str, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_cli(monkeypatch, database_url, simulator)

    result = CliRunner().invoke(app, ["doctor"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith("ok      Duo")
    assert result.output.splitlines()[2].startswith("ok      Duo alerts")
    assert result.output.splitlines()[3].startswith("ok      sign-in attacks")
    assert result.output.splitlines()[-1] == "no check failed (8 parts)"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.mark.parametrize(
    ("service_password", "state"), [(SERVICE_PASSWORD, State.OK), ("not-it", State.FAILED)]
)
async def test_an_ldap_directory_is_checked_with_its_service_account(
    database_url: str,
    simulator: RunningSimulator,
    slapd: RunningSlapd,
    service_password: str,
    state: State,
) -> None:
    ldap = {
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password": service_password,
        "base_dn": BASE_DN,
    }
    gateway = await started(database_url, simulator, directories=["local", "ldap"], ldap=ldap)
    try:
        findings = by_part(await examine(gateway))
    finally:
        await gateway.close()
    assert findings["directory ldap"].state is state, findings["directory ldap"]


async def test_the_api_status_says_which_parts_answer(
    database_url: str, simulator: RunningSimulator, mail: SmtpServer
) -> None:
    """`twofa doctor` for a monitor: ok until a part fails, then the part and why."""
    async with started_api(database_url, simulator) as api:
        answer = await api.http.get("/status")
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True
        states = {check["part"]: check["state"] for check in answer.json()["checks"]}
        assert states == {
            "database": "ok",
            "Duo": "ok",
            "Duo alerts": "ok",
            "sign-in attacks": "ok",
            "mail server": "not set up",
            "secret keys": "ok",
            "clock": "ok",
            "change feed": "ok",
        }

        await api.http.put(
            "/settings/email",
            json={
                "host": mail.host,
                "port": 9,  # discard: nothing listens there
                "security": "none",
                "from_address": "twofa@example.com",
                "timeout_s": 2,
            },
        )
        answer = await api.http.get("/status")

        assert answer.json()["ok"] is False
        (mail_check,) = [c for c in answer.json()["checks"] if c["part"] == "mail server"]
        assert mail_check["state"] == "FAILED"
        assert ":9" in mail_check["detail"]

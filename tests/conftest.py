"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support.servers import serve_in_thread
from tests.support.smtp import SmtpServer, smtp_server
from twofa.simulator import SimulatorSettings, create_simulator_app

IKEY = "DITESTINTEGRATION001"
SKEY = "testsecretkeytestsecretkeytestsecretkey0"

pytest_plugins = ["tests.support.hang_report"]


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator on a loopback port, with a synchronous client for its control plane."""

    base_url: str
    port: int
    control: httpx.Client
    ikey: str = IKEY
    skey: str = SKEY

    def add_user(self, username: str, **fields: object) -> dict[str, object]:
        body = {"username": username, "devices": [{"type": "phone", "name": "iPhone"}], **fields}
        response = self.control.post("/_sim/users", json=body)
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    def pending(self, username: str) -> list[dict[str, object]]:
        response = self.control.get("/_sim/transactions", params={"username": username})
        return [t for t in response.json() if t["status"] in ("pushed", "calling")]

    def settle(self, txid: str, action: str) -> httpx.Response:
        return self.control.post(f"/_sim/transactions/{txid}/{action}")


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[RunningSimulator]:
    settings = SimulatorSettings(ikey=IKEY, skey=SKEY, push_timeout_s=60.0, long_poll_hold_s=2.0)
    with (
        serve_in_thread(create_simulator_app(settings)) as base_url,
        httpx.Client(base_url=base_url, timeout=10) as control,
    ):
        yield RunningSimulator(base_url, int(base_url.rsplit(":", 1)[1]), control)


@pytest.fixture
def simulator(simulator_server: RunningSimulator) -> RunningSimulator:
    """The shared simulator, reset to empty for this test."""
    simulator_server.control.post("/_sim/reset").raise_for_status()
    return simulator_server


@pytest.fixture
def mail() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping what it receives."""
    with smtp_server() as server:
        yield server

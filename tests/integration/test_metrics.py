"""`GET /metrics` scraped the way Prometheus does, parsed with prometheus_client's own parser:
forward-auth decisions and their timing, sign-ins, second factors and Duo calls move by
exactly what the test did; the endpoint is off by default and refuses a wrong network or
token. Under `twofa serve --workers 2` a scrape of either worker sums both, a dead worker's
counts stay and its live gauges go, and the log is one JSON object per line.

An in-process gateway runs in this test process, whose metrics live as long as it does:
those checks compare a scrape after with a scrape before."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningSimulator
from tests.integration.test_serve_workers import healthy, sign_in_bob, worker_pids
from tests.support.authenticator_totp import code_at, code_for, current_step
from tests.support.databases import sqlite_database
from tests.support.duo_flow import enrol_with_duo_push
from tests.support.gateway import SECRET, running_gateway, seed_users, sign_in
from tests.support.protected_app import protected_app
from tests.support.servers import free_port, serve_in_thread
from tests.support.totp_flow import enrol_alice, post_code, sign_out
from tests.support.two_factor import allow_methods
from twofa.config import load_settings
from twofa.web.app import create_app
from twofa.web.reverse_proxy import ReverseProxy

APP = "app.example.test"
TOKEN = "scrape-token-0123456789abcdef"
ACCESS = {
    "domains": [APP],
    "rules": [
        {"domain": APP, "resources": ["/wiki/*"], "policy": "one_factor"},
        {"domain": APP, "resources": ["/closed/*"], "policy": "deny"},
        {"domain": APP, "policy": "two_factor"},
    ],
}
LOOPBACK = ["127.0.0.0/8", "::1/128"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Scrapes:
    """Scrapes before and after, and what moved in between."""

    def __init__(self, client: httpx.AsyncClient, **headers: str) -> None:
        self._client = client
        self._headers = headers
        self.before: Samples = {}
        self.after: Samples = {}

    async def scrape(self) -> Samples:
        answer = await self._client.get("/metrics", headers=self._headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parsed(answer.text)

    async def start(self) -> None:
        self.before = await self.scrape()

    async def finish(self) -> None:
        self.after = await self.scrape()

    def moved(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


async def gateway(
    url: str, simulator: RunningSimulator, metrics: dict[str, Any] | None
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    extra: dict[str, Any] = {"access": ACCESS}
    if metrics is not None:
        extra["metrics"] = metrics
    async with (
        running_gateway(url, simulator, extra=extra) as (base_url, settings),
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client, settings


@pytest.fixture
async def scraped(
    tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with sqlite_database(tmp_path) as url:
        async for running in gateway(url, simulator, {"enabled": True, "networks": LOOPBACK}):
            yield running


async def nginx(client: httpx.AsyncClient, path: str, cookie: str = "") -> int:
    headers = {"X-Original-URL": f"https://{APP}{path}"}
    if cookie:
        headers["Cookie"] = f"twofa_session={cookie}"
    return (await client.get("/authz/nginx", headers=headers)).status_code


async def test_forward_auth_decisions_are_counted_by_verdict_and_timed(
    scraped: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = scraped
    scrapes = Scrapes(client)
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as browser:
        assert (await sign_in(browser, "bob")).status_code == 303
        cookie = browser.cookies["twofa_session"]
    await scrapes.start()

    assert [await nginx(client, "/wiki/Home", cookie) for _ in range(3)] == [200] * 3
    assert await nginx(client, "/wiki/Home") == 401
    assert await nginx(client, "/closed/x", cookie) == 403
    assert await nginx(client, "/open/../closed/x", cookie) == 400
    no_host = await client.get(
        "/authz/forward", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": ""}
    )
    assert no_host.status_code == 403  # no request to check: forbidden, and nothing timed
    await scrapes.finish()

    decisions = "twofa_forward_auth_decisions_total"
    assert scrapes.moved(decisions, verdict="allow") == 3
    assert scrapes.moved(decisions, verdict="sign_in") == 1
    assert scrapes.moved(decisions, verdict="forbidden") == 2
    assert scrapes.moved(decisions, verdict="bad_path") == 1
    assert scrapes.moved(decisions, verdict="unavailable") == 0
    assert scrapes.moved(decisions, verdict="error") == 0
    assert scrapes.moved("twofa_forward_auth_seconds_count") == 6
    assert 0 < scrapes.moved("twofa_forward_auth_seconds_sum") < 6
    # Cumulative buckets: everything is under the last one, each bucket holds the ones below.
    assert scrapes.moved("twofa_forward_auth_seconds_bucket", le="+Inf") == 6
    assert scrapes.moved("twofa_forward_auth_seconds_bucket", le="1.0") == 6
    below = [scrapes.moved("twofa_forward_auth_seconds_bucket", le=le) for le in ("0.001", "0.1")]
    assert below[0] <= below[1] <= 6


async def test_the_built_in_proxy_counts_its_checks_too(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    port = free_port()
    async with sqlite_database(tmp_path) as url:
        settings = load_settings(
            environ={},
            mode="dev",
            secret_key=SECRET,
            database_url=url,
            public_url=f"http://127.0.0.1:{port}",
            access=ACCESS,
            metrics={"enabled": True, "networks": LOOPBACK},
        )
        await seed_users(settings)
        with (
            serve_in_thread(protected_app()) as app_url,
            serve_in_thread(ReverseProxy(create_app(settings), app_url), port=port) as base,
        ):
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                scrapes = Scrapes(client)
                await scrapes.start()
                app = {"Host": f"{APP}:{port}"}
                assert (await client.get("/wiki/Home", headers=app)).status_code == 302
                assert (await client.get("/closed/x", headers=app)).status_code == 403
                assert (await client.get("/wiki/x;a=b", headers=app)).status_code == 400
                await scrapes.finish()

    decisions = "twofa_forward_auth_decisions_total"
    assert scrapes.moved(decisions, verdict="sign_in") == 1
    assert scrapes.moved(decisions, verdict="forbidden") == 1
    assert scrapes.moved(decisions, verdict="bad_path") == 1  # refused before the check
    assert scrapes.moved("twofa_forward_auth_seconds_count") == 2


async def test_sign_ins_and_second_factors_are_counted_by_outcome(
    scraped: tuple[httpx.AsyncClient, Any],
) -> None:
    client, settings = scraped
    await allow_methods(settings, ("totp", "duo_push"), first_method="totp")
    scrapes = Scrapes(client)
    await scrapes.start()

    assert (await sign_in(client, "bob")).status_code == 303
    await sign_out(client)
    assert (await sign_in(client, "bob", "wrong-password")).status_code == 401
    secret = await enrol_alice(client)  # a password sign-in, then the app set up: an allow
    await sign_out(client)
    assert (await sign_in(client, "alice")).status_code == 303
    wrong = await post_code(client, "/2fa/m/totp", code_for(secret, current_step() - 40))
    assert wrong.status_code == 401
    right = await post_code(client, "/2fa/m/totp", code_at(secret, +1))
    assert right.status_code == 303
    await scrapes.finish()

    sign_ins = "twofa_sign_ins_total"
    assert scrapes.moved(sign_ins, outcome="signed_in") == 1
    assert scrapes.moved(sign_ins, outcome="refused") == 1
    assert scrapes.moved(sign_ins, outcome="second_factor") == 2
    assert scrapes.moved(sign_ins, outcome="locked") == 0
    second_factor = "twofa_second_factor_total"
    assert scrapes.moved(second_factor, method="totp", outcome="allow") == 2
    assert scrapes.moved(second_factor, method="totp", outcome="refused") == 1
    assert all("alice" not in str(key) and "bob" not in str(key) for key in scrapes.after)


async def test_duo_calls_pushes_and_their_outcomes_are_counted(
    scraped: tuple[httpx.AsyncClient, Any], simulator: RunningSimulator
) -> None:
    client, _ = scraped
    scrapes = Scrapes(client)
    await scrapes.start()

    await enrol_with_duo_push(client, simulator)  # a phone Duo knows: preauth, push, polls
    await sign_out(client)
    await sign_in(client, "alice")
    simulator.control.post("/_sim/faults", json={"endpoints": ["preauth"], "status": 401})
    refused = await client.get("/2fa/validate")  # Duo refuses the keys
    assert refused.status_code == 503, refused.text
    await scrapes.finish()

    seconds = "twofa_duo_api_seconds_count"
    assert scrapes.moved(seconds, endpoint="preauth") == 2
    assert scrapes.moved(seconds, endpoint="auth") == 1  # the push, sent with async=1
    assert scrapes.moved(seconds, endpoint="auth_status") >= 1  # polled until approved
    assert scrapes.moved(seconds, endpoint="other") == 0
    errors = "twofa_duo_api_errors_total"
    assert scrapes.moved(errors, endpoint="preauth", kind="unauthorized") == 1
    assert scrapes.moved(errors, endpoint="auth_status", kind="unauthorized") == 0
    assert scrapes.moved("twofa_second_factor_total", method="duo_push", outcome="allow") == 1
    assert value(scrapes.after, "twofa_duo_pushes_pending") == 0  # no poll in flight now


async def test_metrics_are_off_by_default(tmp_path: Path, simulator: RunningSimulator) -> None:
    """Off, nothing answers, and the hot path does not pay for counting what nobody reads."""
    sign_ins = ("twofa_forward_auth_decisions_total", {"verdict": "sign_in"})
    async with sqlite_database(tmp_path) as url:
        async for client, _ in gateway(url, simulator, None):
            answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 404
            assert "twofa_" not in answer.text
            before = REGISTRY.get_sample_value(*sign_ins)
            assert await nginx(client, "/wiki/Home") == 401
            assert REGISTRY.get_sample_value(*sign_ins) == before


async def test_a_token_is_required_and_compared(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    async with sqlite_database(tmp_path) as url:
        async for client, _ in gateway(url, simulator, {"enabled": True, "token": TOKEN}):
            missing = await client.get("/metrics")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            not_bearer = await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
            assert not_bearer.status_code == 401
            for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer x"):
                refused = await client.get("/metrics", headers={"Authorization": wrong})
                assert refused.status_code == 403, wrong
                assert "twofa_" not in refused.text
            allowed = await client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
            assert allowed.status_code == 200
            assert "twofa_forward_auth_decisions_total" in allowed.text


async def test_a_scraper_outside_the_networks_is_refused(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    """From loopback, outside 10.0.0.0/8: refused. Loopback is a trusted proxy (the default
    `trusted_proxies`), so the address it forwards is the scraper's, as for every page."""
    rules = {"enabled": True, "networks": ["10.0.0.0/8"], "token": TOKEN}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with sqlite_database(tmp_path) as url:
        async for client, _ in gateway(url, simulator, rules):
            direct = await client.get("/metrics", headers=bearer)
            assert direct.status_code == 403
            assert "twofa_" not in direct.text
            forwarded = {**bearer, "X-Forwarded-For": "10.1.2.3"}
            assert (await client.get("/metrics", headers=forwarded)).status_code == 200
            in_network_no_token = {"X-Forwarded-For": "10.1.2.3"}
            assert (await client.get("/metrics", headers=in_network_no_token)).status_code == 401
            outside = {**bearer, "X-Forwarded-For": "192.0.2.7"}
            assert (await client.get("/metrics", headers=outside)).status_code == 403


# `twofa serve --workers 2`, as an admin runs it.


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    config = tmp_path / "twofa.toml"

    async def prepare() -> None:
        async with sqlite_database(tmp_path) as url:
            config.write_text(
                f"""
mode = "dev"
secret_key = "{SECRET}"
database_url = "{url}"
public_url = "http://127.0.0.1:{port}"
log_format = "json"
[metrics]
enabled = true
networks = ["127.0.0.0/8"]
[access]
domains = ["{APP}"]
[[access.rules]]
domain = "{APP}"
policy = "one_factor"
"""
            )
            await seed_users(load_settings(config, environ={}))

    asyncio.run(prepare())
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "twofa.cli.main", "--config", str(config), "serve"),
                *("--port", str(port), "--workers", "2"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin"},
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        try:
            while len(worker_pids(process.pid)) < 2 or not healthy(base):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text())
                time.sleep(0.2)
            yield base, process, log_path
        finally:
            process.terminate()
            process.wait(timeout=20)


def metrics_directory(worker: int) -> Path:
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    found = [entry for entry in environ if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    assert found, "the worker has no metrics directory"
    return Path(found[0].split(b"=", 1)[1].decode())


def allowed_by_file(path: Path) -> float:
    """The allow decisions one worker counted, read from its own file."""
    for metric in MultiProcessCollector.merge([str(path)]):
        for sample in metric.samples:
            name, labels = sample.name, sample.labels
            if name == "twofa_forward_auth_decisions_total" and labels == {"verdict": "allow"}:
                return float(sample.value)
    return 0.0


def scrape(base: str) -> Samples:
    with httpx.Client(base_url=base, timeout=10) as fresh:  # a new connection: either worker
        answer = fresh.get("/metrics")
        assert answer.status_code == 200, answer.text
        return parsed(answer.text)


def test_a_scrape_of_either_worker_sums_every_worker(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log_path = served
    workers = worker_pids(process.pid)
    directory = metrics_directory(workers[0])
    assert metrics_directory(workers[1]) == directory
    assert directory.is_dir()
    assert directory.name.startswith("twofa-metrics-")
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)

    with httpx.Client(base_url=base, timeout=10) as browser:
        sign_in_bob(browser)
        cookie = f"twofa_session={browser.cookies['twofa_session']}"
    checks = 40  # each on a new connection, which SO_REUSEPORT gives to either worker
    for _ in range(checks):
        with httpx.Client(base_url=base, timeout=5) as fresh:
            answer = fresh.get(
                "/authz/nginx",
                headers={"X-Original-URL": f"https://{APP}/wiki", "Cookie": cookie},
            )
            assert answer.status_code == 200

    by_worker = {pid: allowed_by_file(directory / f"counter_{pid}.db") for pid in workers}
    assert sum(by_worker.values()) == checks
    assert all(count > 0 for count in by_worker.values()), by_worker  # both served some
    for _ in range(6):  # whichever worker answers the scrape, it reports the sum
        samples = scrape(base)
        assert value(samples, "twofa_forward_auth_decisions_total", verdict="allow") == checks
        assert value(samples, "twofa_forward_auth_seconds_count") == checks
        assert value(samples, "twofa_sign_ins_total", outcome="signed_in") == 1

    # A worker that dies: its counts stay (a counter never goes down), its live gauges go.
    dead = workers[0]
    assert (directory / f"gauge_livesum_{dead}.db").exists()
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while dead in (pids := worker_pids(process.pid)) or len(pids) < 2 or not healthy(base):
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    assert not (directory / f"gauge_livesum_{dead}.db").exists()
    assert not (directory / f"gauge_livemin_{dead}.db").exists()
    assert (directory / f"counter_{dead}.db").exists()
    samples = scrape(base)
    assert value(samples, "twofa_forward_auth_decisions_total", verdict="allow") == checks

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    assert not directory.exists()  # removed with the run: the next run starts from 0

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(entry, dict) and entry["level"] for entry in entries)
    audit = [entry for entry in entries if entry["logger"] == "twofa.audit"]
    assert {
        "kind": "login",
        "outcome": "password_ok",
        "username": "bob",
        "client_ip": "127.0.0.1",
    }.items() <= next(entry for entry in audit if entry["kind"] == "login").items()
    access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
    assert any(entry["path"] == "/metrics" and entry["status"] == 200 for entry in access)

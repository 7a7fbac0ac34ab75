"""`twofa serve --workers N`: several processes on one port behave as one gateway. The
settings file given with --config reaches every worker, a session made through one worker is
honoured by the others, and a sign-out is seen by all of them within about a second."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users
from tests.support.servers import free_port
from twofa.config import load_settings

pytestmark = pytest.mark.integration
APP = "app.example.test"


def settings_file(tmp_path: Path, database_url: str, port: int) -> Path:
    path = tmp_path / "twofa.toml"
    path.write_text(
        f"""
mode = "dev"
secret_key = "{SECRET}"
database_url = "{database_url}"
public_url = "http://127.0.0.1:{port}"
[access]
domains = ["{APP}"]
[[access.rules]]
domain = "{APP}"
policy = "one_factor"
"""
    )
    return path


def worker_pids(parent: int) -> list[int]:
    """The serving children of uvicorn's supervisor (not multiprocessing's helpers)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()

    async def prepare() -> Path:
        async with sqlite_database(tmp_path) as url:
            config = settings_file(tmp_path, url, port)
            await seed_users(load_settings(config, environ={}))
            return config

    config = asyncio.run(prepare())
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "twofa.cli.main", "--config", str(config), "serve"),
            *("--port", str(port), "--workers", "2", "--no-access-log"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin"},  # nothing from the test's own environment
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while len(worker_pids(process.pid)) < 2 or not healthy(base):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "serve.log").read_text())
            time.sleep(0.2)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def checks(base: str, cookie: str, times: int) -> set[int]:
    """The forward-auth answers over `times` fresh connections (spread over the workers)."""
    answers = set()
    for _ in range(times):
        with httpx.Client(base_url=base, timeout=5) as fresh:
            answer = fresh.get(
                "/authz/nginx",
                headers={"X-Original-URL": f"https://{APP}/wiki", "Cookie": cookie},
            )
            answers.add(answer.status_code)
    return answers


def sign_in_bob(browser: httpx.Client) -> None:
    page = browser.get("/login")
    answer = browser.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "username": "bob", "password": PASSWORDS["bob"]},
    )
    assert answer.status_code == 303


def test_workers_share_settings_and_sessions(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    base, process = served
    assert len(worker_pids(process.pid)) == 2
    with httpx.Client(base_url=base, timeout=10) as browser:
        sign_in_bob(browser)
        cookie = f"twofa_session={browser.cookies['twofa_session']}"
        assert checks(base, cookie, 12) == {200}  # every worker honours the session
        other_domain = httpx.get(
            f"{base}/authz/nginx",
            headers={"X-Original-URL": "https://elsewhere.example.test/", "Cookie": cookie},
        )
        assert other_domain.status_code == 403  # the --config file's domains, in every worker
        home = browser.get("/")
        browser.post("/logout", data={"csrf_token": csrf_from(home.text)})
    deadline = time.monotonic() + 3
    while (answers := checks(base, cookie, 6)) != {401} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answers == {401}


def established_by_worker(pids: list[int], port: int) -> dict[int, int]:
    """How many established connections to `port` each worker process holds, from /proc."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                established.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        counts[pid] = sum(1 for fd in fds.iterdir() if os.readlink(fd) in established)
    return counts


def test_connections_are_spread_over_the_workers(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """Each worker accepts on a socket of its own (SO_REUSEPORT): with one shared socket, the
    first worker to wake took every waiting connection, and under load one worker often held
    them all while the other idled. With 32 connections hashed over two sockets, one worker
    getting none has odds of 2**-31."""
    base, process = served
    port = int(base.rsplit(":", 1)[1])
    connections = []
    try:
        # All at once, as a load balancer or wrk opens them: the burst a shared socket gave
        # to whichever worker woke first.
        connections = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")  # accepted and served
        counts = established_by_worker(worker_pids(process.pid), port)
        assert sum(counts.values()) == 32
        assert all(count > 0 for count in counts.values()), counts
    finally:
        for connection in connections:
            connection.close()

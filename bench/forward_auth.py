"""How fast the forward-auth check answers, beside a bare 200 route of the same server.

Starts `twofa serve` (uvloop + httptools; one worker, then `--workers 2`, one per core) on a
fresh SQLite database with one signed-in user whose session passed a second factor, then runs
wrk (one thread) on loopback: first
against `/healthz` (a bare 200 on the same server), then against `/authz/nginx` with the
session cookie and the `X-Original-URL` nginx sends, each for the same duration and number
of connections, three rounds each, keeping the median round; then a plain Starlette app with
one route with the same worker count (the floor no Python server here goes below). The last
line is the summary recorded in bench/README.md, for the last worker count run.

    .venv/bin/python bench/forward_auth.py [--duration 10] [--connections 64] [--rounds 3]
        [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from twofa.config import load_settings
from twofa.domain.client import NO_CLIENT
from twofa.services.runtime import Gateway
from twofa.services.state.sessions import Level
from twofa.storage.database import create_engine, upgrade
from twofa.storage.repositories import Users

SECRET = "forward-auth-benchmark-secret-key-0000000"  # noqa: S105 (benchmark only)
DOMAIN = "app.example.test"
SETTINGS_TOML = f"""
mode = "dev"
secret_key = "{SECRET}"
[access]
domains = ["{DOMAIN}"]
[[access.rules]]
domain = "{DOMAIN}"
resources = ["/rest/api/*"]
policy = "bypass"
[[access.rules]]
domain = "{DOMAIN}"
policy = "two_factor"
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def signed_in_cookie(database_url: str) -> str:
    """A session that passed the password and a second factor, as after a real sign-in."""
    engine = create_engine(database_url)
    await upgrade(engine)
    await engine.dispose()
    settings = load_settings(environ={}, mode="dev", secret_key=SECRET, database_url=database_url)
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.add_user("alice", "alice-password-1", display_name="Alice")
        await gateway.accounts.add_group("engineering")
        await gateway.accounts.set_membership("engineering", "alice", True)
        async with gateway.db.begin() as db:
            user = await Users(db).by_name("alice")
            assert user is not None
            _, anonymous = await gateway.sessions.open(NO_CLIENT)
            token, _ = await gateway.sessions.promote(
                db, anonymous, user.id, Level.SIGNED_IN, NO_CLIENT, second_factor=True
            )
        return token
    finally:
        await gateway.close()


def start_server(
    config: Path, database_url: str, port: int, workers: int, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """`twofa serve`, its output discarded or appended to `log` (to read when it fails)."""
    env = {**os.environ, "TWOFA_CONFIG": str(config), "TWOFA_DATABASE_URL": database_url}
    twofa = Path(sys.executable).with_name("twofa")
    command = [str(twofa), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("ab") if log is not None else open(os.devnull, "wb") as out:
        process = subprocess.Popen(
            [*command, "--workers", str(workers)], env=env, stdout=out, stderr=out
        )
    wait_for_port(port, process)
    time.sleep(1 if workers > 1 else 0)  # the listening socket is up before every worker
    return process


def start_bare_starlette(port: int, workers: int) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("_bare_starlette.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    time.sleep(1 if workers > 1 else 0)  # the listening socket is up before every worker
    return process


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server on port {port} did not start")


def wrk(
    url: str, headers: dict[str, str], duration: int, connections: int, script: Path | None = None
) -> WrkResult:
    """One wrk run; `script` is a Lua script of wrk's (e.g. a request per cookie of many)."""
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    assert p99, output
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return WrkResult(rps, float(p99.group(1)) * scale, errors)


def median_round(results: list[WrkResult]) -> WrkResult:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


@dataclass(frozen=True)
class Figures:
    workers: int
    floor: WrkResult
    bare: list[WrkResult]
    check: list[WrkResult]


def measure(
    workers: int, cookie: str, config: Path, database_url: str, args: argparse.Namespace
) -> Figures:
    port = free_port()
    server = start_server(config, database_url, port, workers)
    try:
        base = f"http://127.0.0.1:{port}"
        check_headers = {
            "Cookie": f"twofa_session={cookie}",
            "X-Original-URL": f"http://{DOMAIN}/browse/X-1",
            "X-Forwarded-For": "203.0.113.9",
        }
        wrk(f"{base}/healthz", {}, 2, args.connections)  # warm-up
        wrk(f"{base}/authz/nginx", check_headers, 2, args.connections)
        bare, check = [], []
        for _ in range(args.rounds):
            bare.append(wrk(f"{base}/healthz", {}, args.duration, args.connections))
            check.append(wrk(f"{base}/authz/nginx", check_headers, args.duration, args.connections))
    finally:
        server.terminate()
        server.wait(timeout=20)
    floor_port = free_port()
    floor_server = start_bare_starlette(floor_port, workers)
    try:
        floor = wrk(f"http://127.0.0.1:{floor_port}/healthz", {}, args.duration, args.connections)
    finally:
        floor_server.terminate()
        floor_server.wait(timeout=20)
    return Figures(workers, floor, bare, check)


def summary(figures: Figures) -> str:
    bare, check = median_round(figures.bare), median_round(figures.check)
    share = 100 * check.rps / bare.rps
    return (
        f"forward-auth: {check.rps:,.0f} rps ({share:.0f}% of bare route "
        f"{bare.rps:,.0f} rps), p99 {check.p99_ms:.2f} ms"
    )


def report(figures: Figures) -> None:
    print(f"-- {figures.workers} worker(s), wrk 1 thread:")
    print(
        f"floor: plain Starlette, one route, same server set-up: {figures.floor.rps:,.0f} rps, "
        f"p99 {figures.floor.p99_ms:.2f} ms"
    )
    for name, rounds in (("bare /healthz", figures.bare), ("check /authz/nginx", figures.check)):
        shown = ", ".join(f"{r.rps:,.0f} rps p99 {r.p99_ms:.2f} ms" for r in rounds)
        print(f"{name}: {shown}; errors {sum(r.errors for r in rounds)}")
    print(f"median rounds, {figures.workers} worker(s): {summary(figures)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk round")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to run; the "
        "summary line is the last one's (default: 1, then one per core)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite+aiosqlite:///{tmp}/twofa.db"
        cookie = asyncio.run(signed_in_cookie(database_url))
        config = Path(tmp) / "twofa.toml"
        config.write_text(SETTINGS_TOML)
        results = [measure(n, cookie, config, database_url, args) for n in args.workers]
    for figures in results:
        report(figures)
    print(f"({results[-1].workers} worker(s), {args.connections} connections)")
    print(summary(results[-1]))


if __name__ == "__main__":
    main()

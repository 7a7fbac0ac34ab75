"""How many TOTP verifications per second the gateway completes end to end on PostgreSQL.

Creates a throwaway PostgreSQL database (127.0.0.1:5432 or BENCH_POSTGRES_DSN, dropped at the
end), seeds users through the real services (2FA on, Two Factor Settings allowing TOTP, one
TOTP credential each) and a session per user at the password level (made directly: password
hashing is not what is measured). Then, for each server count asked for, starts that many
`twofa serve --no-access-log` processes on their own ports and drives them from a separate
load-generator process (bench/_totp_load.py): a verification is GET /2fa/m/totp (a fresh
challenge) then POST /2fa/m/totp with the CSRF token, the challenge and a valid code, answered
by a 303 (challenge consumed, TOTP step stored, session promoted, audit written). Each user
verifies once; every run has its own users. The last line is the best run, recorded in
bench/README.md.

    .venv/bin/python bench/totp_verify.py [--users 1000] [--warmup 100] [--concurrency 64]
        [--servers 1 2] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, select

from twofa.config import load_settings
from twofa.domain.client import NO_CLIENT
from twofa.methods.base import NewCredential
from twofa.methods.totp import new_secret
from twofa.security.sealing import Sealer
from twofa.services import credential_store
from twofa.services.console import TwoFactorConfig
from twofa.services.runtime import Gateway
from twofa.services.sessions import Level
from twofa.storage.database import create_engine, upgrade
from twofa.storage.tables import AuditRow, UserRow

SECRET = "totp-verify-benchmark-secret-key-00000000"  # noqa: S105 (benchmark only)
POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SETTINGS_TOML = f'mode = "dev"\nsecret_key = "{SECRET}"\n'
LOADER = Path(__file__).with_name("_totp_load.py")
SESSION_WRITERS = 10  # below the engine's default pool of 5 + 10 overflow connections


@dataclass(frozen=True)
class Seeded:
    user_id: int
    secret: str


@dataclass(frozen=True)
class Run:
    servers: int
    figures: dict[str, Any]


async def create_database() -> str:
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    name = f"twofa_bench_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return url


async def drop_database(url: str) -> None:
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(url: str, count: int) -> list[dict[str, str]]:
    """`count` TOTP users, each with a fresh password-level session: [{cookie, secret}]."""
    settings = load_settings(environ={}, mode="dev", secret_key=SECRET, database_url=url)
    gateway = await Gateway.start(settings)
    try:
        await gateway.console.save_two_factor(
            TwoFactorConfig(methods=("totp",), first_method="totp"), "bench", NO_CLIENT
        )
        now = gateway.clock.now()
        sealer = Sealer(SECRET)
        # One transaction for all users: add_user one by one costs a round trip each.
        async with gateway.db.begin() as db:
            rows = [
                UserRow(username=f"bench-{i:05d}", twofa_enabled=True, created_at=now)
                for i in range(count)
            ]
            db.add_all(rows)
            await db.flush()
            seeded = []
            for row in rows:
                secret = new_secret()
                credential = NewCredential(label="Authenticator app", secret=secret, state={})
                await credential_store.store(db, sealer, row.id, "totp", credential, now)
                seeded.append(Seeded(row.id, secret))
        writers = asyncio.Semaphore(SESSION_WRITERS)

        async def session_of(user: Seeded) -> dict[str, str]:
            async with writers:
                _, anonymous = await gateway.sessions.open(NO_CLIENT)
                async with gateway.db.begin() as db:
                    token, _ = await gateway.sessions.promote(
                        db, anonymous, user.user_id, Level.PASSWORD, NO_CLIENT
                    )
            return {"cookie": token, "secret": user.secret}

        return list(await asyncio.gather(*(session_of(user) for user in seeded)))
    finally:
        await gateway.close()


async def audit_rows(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(AuditRow)) or 0)
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(config: Path, database_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TWOFA_CONFIG": str(config), "TWOFA_DATABASE_URL": database_url}
    twofa = Path(sys.executable).with_name("twofa")
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(twofa), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server on port {port} did not start:\n{log.read_text()[-2000:]}")


def run_load(
    tmp: Path, url: str, servers: int, users: list[dict[str, str]], args: argparse.Namespace
) -> Run:
    config = tmp / "twofa.toml"
    config.write_text(SETTINGS_TOML)
    ports = [free_port() for _ in range(servers)]
    processes = [start_server(config, url, port, tmp / f"server-{port}.log") for port in ports]
    try:
        plan = tmp / f"plan-{servers}.json"
        plan.write_text(
            json.dumps(
                {
                    "bases": [f"http://127.0.0.1:{port}" for port in ports],
                    "users": users,
                    "warmup": args.warmup,
                    "concurrency": args.concurrency,
                    "duration": args.duration,
                }
            )
        )
        if args.pid_file:  # lets a profiler attach to the (first) server
            Path(args.pid_file).write_text(str(processes[0].pid))
        cpu_before = [cpu_seconds(process.pid) for process in processes]
        output = subprocess.run(
            [sys.executable, str(LOADER), str(plan)], capture_output=True, text=True, check=True
        ).stdout
        server_cpu = sum(cpu_seconds(p.pid) for p in processes) - sum(cpu_before)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
    figures = json.loads(output.strip().splitlines()[-1])
    figures["server_cpu_s"] = server_cpu
    return Run(servers, figures)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), warm-up included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000, help="measured users per run")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted users per run first")
    parser.add_argument("--concurrency", type=int, default=64, help="verifications in flight")
    parser.add_argument(
        "--servers", type=int, nargs="+", default=[1, 2], help="server processes, one run each"
    )
    parser.add_argument("--duration", type=float, default=15, help="time bound of a run (s)")
    parser.add_argument("--pid-file", help="write the first server's pid here (for py-spy)")
    args = parser.parse_args()
    per_run = args.warmup + args.users
    url = asyncio.run(create_database())
    try:
        started = time.perf_counter()
        everyone = asyncio.run(seed(url, per_run * len(args.servers)))
        print(f"seeded {len(everyone)} users and sessions in {time.perf_counter() - started:.1f} s")
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for index, servers in enumerate(args.servers):
                users = everyone[index * per_run : (index + 1) * per_run]
                run = run_load(Path(tmp), url, servers, users, args)
                runs.append(run)
                f = run.figures
                print(
                    f"{servers} server process{'es' if servers > 1 else ''}: "
                    f"users {f['users']}, concurrency {args.concurrency}, "
                    f"successes {f['successes']}, errors {f['errors']} {f['error_kinds'] or ''}, "
                    f"elapsed {f['elapsed_s']:.2f} s, rate {f['rate']:.0f}/s, "
                    f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms"
                )
                done = f["successes"] + args.warmup
                print(
                    f"  server CPU {f['server_cpu_s']:.1f} s, "
                    f"{1000 * f['server_cpu_s'] / max(done, 1):.1f} ms per verification"
                    " (warm-up included)"
                )
        audits = asyncio.run(audit_rows(url))
        print(f"audit rows written: {audits}")
    finally:
        asyncio.run(drop_database(url))
    best = max(runs, key=lambda r: r.figures["rate"])
    print(f"best: {best.servers} server process{'es' if best.servers > 1 else ''}")
    print(
        f"totp verify: {best.figures['rate']:.0f} per s end-to-end (postgresql), "
        f"p99 {best.figures['p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()

"""How many TOTP verifications per second the gateway completes end to end on PostgreSQL.

Creates a throwaway PostgreSQL database (127.0.0.1:5432, dropped at the end), seeds N users
through the real services (2FA on, Two Factor Settings allowing only TOTP, a TOTP credential
each) and, before each run, a sign-in session per user at the password level (created
directly: argon2 is not what is measured). Serves the real app with `twofa serve` (uvloop,
httptools, 1 or more worker processes; every code through the one path,
services.second_factor.pipeline)
and drives it from a separate, lean load-generator
process (bench/_totp_load.py): each verification is GET /2fa/m/totp (a fresh challenge) then
POST /2fa/m/totp with the CSRF token, the challenge and a valid code, answered by a 303 that
signs the user in (challenge consumed, TOTP step stored, session rotated, audit written).
Each user verifies at most twice per run: first a sign-in with the code of the current time
step, then, after every other user, a step-up with the signed-in session and the code of the
next step, so the single-use rule never limits the run. Prints its figures; the last line is
the summary recorded in bench/README.md (the best of the worker counts tried).

    .venv/bin/python bench/totp_verify.py [--users 4000] [--concurrency 64] [--workers 1 2]
        [--warmup 3] [--duration 15] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import select, update

from twofa.config import Settings, load_settings
from twofa.domain.account_input import NewUser
from twofa.domain.client import ClientInfo
from twofa.methods.base import NewCredential
from twofa.methods.totp import new_secret
from twofa.security.sealing import Sealer
from twofa.services.runtime import Gateway
from twofa.services.second_factor import credential_store
from twofa.services.settings.two_factor import Enforcement, TwoFactorConfig
from twofa.services.state.sessions import Level
from twofa.storage.database import create_engine, upgrade
from twofa.storage.tables import CredentialRow, UserRow

SECRET = "totp-verify-benchmark-secret-key-0000000000"  # noqa: S105 (benchmark only)
POSTGRES_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BROWSER = ClientInfo(ip="127.0.0.1", user_agent="bench/totp_verify")
BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Seeded:
    secrets: dict[int, str]  # user id -> TOTP secret


@dataclass(frozen=True)
class RunResult:
    workers: int
    figures: dict[str, Any]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def create_database() -> tuple[str, str]:
    """A new, migrated database; returns its name and SQLAlchemy URL."""
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
    return name, url


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=3)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def seed(settings: Settings, users: int) -> Seeded:
    """Users who must use 2FA (enforced for everyone), TOTP the only method, a credential each,
    through the services an admin's import and the users' enrolments go through."""
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.import_users([NewUser(f"user{n:05d}") for n in range(users)])
        two_factor = TwoFactorConfig(
            methods=("totp",), first_method="totp", enforcement=Enforcement.EVERYONE
        )
        await gateway.console.save_two_factor(two_factor, "bench", BROWSER)
        sealer = Sealer(settings.secret_key.get_secret_value())
        secrets_by_user: dict[int, str] = {}
        now = gateway.clock.now()
        async with gateway.db.begin() as db:
            for user_id in await db.scalars(select(UserRow.id).order_by(UserRow.id)):
                secret = new_secret()
                credential = NewCredential(label="Authenticator app", secret=secret, state={})
                await credential_store.store(db, sealer, user_id, "totp", credential, now)
                secrets_by_user[user_id] = secret
        return Seeded(secrets_by_user)
    finally:
        await gateway.close()


async def fresh_sessions(settings: Settings, seeded: Seeded) -> list[list[str]]:
    """A new password-level session per user (as after the password step), and no TOTP
    step used yet: every run starts from the same state. Returns `[cookie, secret]` pairs."""
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            await db.execute(
                update(CredentialRow).where(CredentialRow.method == "totp").values(state={})
            )
        _, anonymous = await gateway.sessions.open(BROWSER)
        pairs: list[list[str]] = []
        async with gateway.db.begin() as db:
            for user_id, secret in seeded.secrets.items():
                token, _view = await gateway.sessions.promote(
                    db, anonymous, user_id, Level.AWAITING_SECOND_FACTOR, BROWSER
                )
                pairs.append([token, secret])
        return pairs
    finally:
        await gateway.close()


def start_server(database_url: str, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TWOFA_MODE": "dev",
        "TWOFA_SECRET_KEY": SECRET,
        "TWOFA_DATABASE_URL": database_url,
        "TWOFA_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    twofa = Path(sys.executable).with_name("twofa")  # as production runs it
    command = [
        str(twofa), "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    return answering(process, port, log)


def answering(process: subprocess.Popen[bytes], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`process` once its /healthz answers (30 s at most), with its log when it does not."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the server did not answer on port {port}:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def process_tree(pid: int) -> list[int]:
    """The uvicorn process and its worker processes (for the CPU split)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def run_load(
    args: argparse.Namespace,
    port: int,
    work_file: Path,
    server_pids: list[int],
    database: str,
    profile: Path,
) -> dict[str, Any]:
    command = [
        sys.executable, str(BENCH_DIR / "_totp_load.py"), "--port", str(port),
        "--work", str(work_file), "--concurrency", str(args.concurrency),
        "--warmup", str(args.warmup), "--duration", str(args.duration), "--database", database,
    ]  # fmt: skip
    for pid in server_pids:
        command += ["--server-pid", str(pid)]
    load = subprocess.Popen(command, stdout=subprocess.PIPE)
    spy = None
    if args.profile:
        time.sleep(args.warmup)  # the warm-up is not profiled either
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        spy_command = [
            py_spy, "record", "--pid", str(server_pids[0]), "--subprocesses",
            "--duration", str(int(args.duration)), "--format", "speedscope",
            "--output", str(profile),
        ]  # fmt: skip
        profile.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(spy_command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out, _ = load.communicate(timeout=args.warmup + args.duration + 120)
    if spy is not None:
        _, spy_errors = spy.communicate(timeout=60)
        if spy.returncode != 0:
            print(f"py-spy failed ({spy.returncode}): {spy_errors.decode(errors='replace')}")
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed ({load.returncode})")
    figures: dict[str, Any] = json.loads(out)
    return figures


def one_run(
    args: argparse.Namespace,
    workers: int,
    tmp: Path,
    database_url: str,
    settings: Settings,
    seeded: Seeded,
) -> RunResult:
    began = time.perf_counter()
    pairs = asyncio.run(fresh_sessions(settings, seeded))
    work_file = tmp / f"work-{workers}.json"
    work_file.write_text(json.dumps(pairs))
    print(f"{workers} worker(s): {len(pairs)} sessions in {time.perf_counter() - began:.1f} s")
    port = free_port()
    log = tmp / f"server-{workers}.log"
    server = start_server(database_url, port, workers, log)
    try:
        pids = process_tree(server.pid)  # uvicorn starts all its workers at once
        profile = Path(args.profile or tmp) / f"totp_verify-{workers}w.speedscope.json"
        database = database_url.rsplit("/", 1)[1]
        figures = run_load(args, port, work_file, pids, database, profile)
        if args.profile and profile.exists():
            print(f"{workers} worker(s): profile written to {profile}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return RunResult(workers, figures)


def report(result: RunResult, args: argparse.Namespace) -> None:
    f = result.figures
    cpu, per = f["cpu_cores"], f["cpu_ms_per_verification"]
    others = cpu["machine"] - cpu["server"] - cpu["postgres"] - cpu["load"]
    print(
        f"{result.workers} worker(s), {args.concurrency} concurrent users: "
        f"{f['per_s']:.0f} verifications/s over {f['window_s']:.1f} s "
        f"({f['verifications']} counted, {f['ok_total']} in all), "
        f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, errors {f['errors']}"
    )
    print(
        f"  cores busy: server {cpu['server']:.2f}, PostgreSQL {cpu['postgres']:.2f}, "
        f"load generator {cpu['load']:.2f}, other processes {others:.2f}"
    )
    print(
        f"  CPU per verification: server {per['server']:.1f} ms, "
        f"PostgreSQL {per['postgres']:.2f} ms, load generator {per['load']:.2f} ms"
    )
    for sample in f["error_samples"]:
        print(f"  error: {sample}")
    if f["exhausted"]:
        print(f"  warning: the codes ran out before the end: raise --users (now {args.users})")


async def prepare(users: int) -> tuple[str, str, Settings, Seeded]:
    name, url = await create_database()
    try:
        settings = load_settings(environ={}, mode="dev", secret_key=SECRET, database_url=url)
        began = time.perf_counter()
        seeded = await seed(settings, users)
        print(f"seeded {users} users with TOTP in {time.perf_counter() - began:.1f} s")
    except BaseException:
        await drop_database(name)
        raise
    return name, url, settings, seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=4000, help="each verifies at most twice")
    parser.add_argument("--concurrency", type=int, default=64, help="virtual users at once")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker processes"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured")
    parser.add_argument(
        "--profile", metavar="DIR", help="record the server with py-spy (speedscope JSON here)"
    )
    args = parser.parse_args()
    if args.profile and shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        sys.exit("--profile needs py-spy in the venv: .venv/bin/pip install py-spy")
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; PostgreSQL at "
        f"{POSTGRES_DSN.split('@')[-1]}; {args.users} users, {args.concurrency} concurrent"
    )
    name, url, settings, seeded = asyncio.run(prepare(args.users))
    results: list[RunResult] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                result = one_run(args, workers, Path(tmp), url, settings, seeded)
                report(result, args)
                results.append(result)
    finally:
        asyncio.run(drop_database(name))
    best = max(results, key=lambda r: r.figures["per_s"])
    failed = sum(r.figures["errors"] for r in results)
    print(f"best: {best.workers} worker(s); errors in all runs: {failed}")
    print(
        f"totp verify: {best.figures['per_s']:.0f} per s end-to-end (postgresql), "
        f"p99 {best.figures['p99_ms']:.0f} ms"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

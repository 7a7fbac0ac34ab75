"""The floor under bench/totp_verify.py with HTTP: end-to-end TOTP verifications per second
through the leanest Python server that keeps the gateway's guarantees, on PostgreSQL.

The server (bench/_totp_asgi.py) is a plain `async def app(scope, receive, send)` under
uvicorn (uvloop, httptools, `--workers 1`, then 2): no FastAPI, no Starlette, no SQLAlchemy.
It speaks exactly what bench/_totp_load.py (the same load generator as totp_verify.py, driven
through totp_verify's own functions) sends: GET /2fa/m/totp with the `twofa_session` cookie
opens a server-owned challenge in ONE statement and returns a small HTML form; POST
/2fa/m/totp with the CSRF token, the challenge and the code is ONE read, the checks in Python
(constant-time CSRF compare, the sealed seed opened, a step never used before), then ONE
chained write (challenge consumed, step stored, session rotated, audit row; nothing written
unless the consume matched), answered by a 303 with the rotated session's cookie
(bench/_totp_minimal.py). Creates a throwaway database with twofa's migrations (dropped at the
end, even on error), seeds N users with a sealed TOTP seed each and, before each worker count,
a fresh password-level session per user. Prints per worker count the rate, p50/p99 and the CPU
per verification of the server, PostgreSQL and the load generator; the last two lines are the
CPU bound and the summary recorded in bench/README.md (the best worker count).

    PYTHONPATH=src .venv/bin/python bench/totp_http_floor.py [--users 12000]
        [--concurrency 64] [--workers 1 2] [--pool 10] [--warmup 3] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from totp_floor import database_name, drop_database, machine_state, password_sessions, prepare
from totp_verify import RunResult, answering, free_port, process_tree, report, run_load, tail
from twofa.security.sealing import Sealer

BENCH_DIR = Path(__file__).resolve().parent
SECRET = "totp-http-floor-benchmark-secret-key-00000000"  # noqa: S105 (benchmark only)


def start_server(
    dsn: str, port: int, workers: int, pool: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TOTP_FLOOR_DSN": dsn,
        "TOTP_FLOOR_SECRET": SECRET,
        "TOTP_FLOOR_POOL": str(pool),
        "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable, "-m", "uvicorn", "_totp_asgi:app", "--app-dir", str(BENCH_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--lifespan", "on",
        "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "75",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    return answering(process, port, log)


def one_run(
    args: argparse.Namespace, workers: int, tmp: Path, name: str, dsn: str, totp: list[str]
) -> RunResult:
    began = time.perf_counter()
    cookies = asyncio.run(password_sessions(dsn, args.users))
    work_file = tmp / f"work-{workers}.json"
    work_file.write_text(json.dumps([[c, s] for c, s in zip(cookies, totp, strict=True)]))
    print(f"{workers} worker(s): {len(cookies)} sessions in {time.perf_counter() - began:.1f} s")
    port = free_port()
    log = tmp / f"server-{workers}.log"
    server = start_server(dsn, port, workers, args.pool, log)
    try:
        time.sleep(1)  # every worker has its pool before the load starts
        pids = process_tree(server.pid)
        print(f"{workers} worker(s), before: {machine_state()}")
        figures = run_load(args, port, work_file, pids, name, tmp / "unused.json")
        print(f"{workers} worker(s), after: {machine_state()}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    if figures["errors"]:
        print(tail(log))
    return RunResult(workers, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=12_000, help="each verifies at most twice")
    parser.add_argument("--concurrency", type=int, default=64, help="virtual users at once")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker processes"
    )
    parser.add_argument("--pool", type=int, default=10, help="asyncpg connections per worker")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured")
    args = parser.parse_args()
    args.profile = None  # what totp_verify.run_load expects
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; {machine_state()}")
    name = database_name()
    results: list[RunResult] = []
    try:
        began = time.perf_counter()
        dsn, totp = asyncio.run(prepare(name, args.users, Sealer(SECRET)))
        print(f"seeded {args.users} users with TOTP in {time.perf_counter() - began:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            for workers in args.workers:
                result = one_run(args, workers, Path(tmp), name, dsn, totp)
                report(result, args)
                results.append(result)
    finally:
        asyncio.run(drop_database(name))
    best = max(results, key=lambda r: r.figures["per_s"])
    failed = sum(r.figures["errors"] for r in results)
    per = best.figures["cpu_ms_per_verification"]
    total = per["server"] + per["postgres"] + per["load"]
    print(f"best: {best.workers} worker(s); errors in all runs: {failed}")
    print(
        f"CPU per verification: server {per['server']:.2f} ms + PostgreSQL "
        f"{per['postgres']:.2f} ms + load generator {per['load']:.2f} ms = {total:.2f} ms "
        f"-> at most {2000 / total:,.0f} per s on 2 cores"
    )
    print(
        f"totp http floor: {best.figures['per_s']:.0f} per s (raw ASGI + asyncpg, one statement "
        f"per phase), postgresql, p99 {best.figures['p99_ms']:.0f} ms"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

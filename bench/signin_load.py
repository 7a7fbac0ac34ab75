"""The hot path at scale (issue 16): sign-ins through /login, and forward-auth over the sessions
they made, beside the bare route and while more sign-ins run.

One run, on a fresh PostgreSQL database (127.0.0.1:5432, `BENCH_POSTGRES_DSN` to change it;
dropped at the end), `twofa serve --workers 2 --no-access-log`, one protected domain whose rule
is `one_factor` (a password is enough), argon2id at the `--argon2-*` cost, the change feed
"auto" (PostgreSQL LISTEN/NOTIFY; Redis with `--redis`):

1. `--users` users are inserted directly with one password hash computed once: the users'
   rows are not what is measured.
2. `--sessions` sign-ins through the real pages, `--concurrency` at a time: GET /login (an
   anonymous session, its cookie and the form's CSRF token), then POST /login with the
   username and password, answered 303 with the signed-in session's cookie. Each sign-in comes
   from its own address (`X-Forwarded-For`, as through nginx; loopback is a trusted proxy),
   so the per-address throttle sees browsers, not one client. The concurrency stays below the
   hashing pool's limit (2 threads + 16 waiting per worker: more answers 503 "busy"). Rate L,
   and the CPU per sign-in of the server (its event loops apart from its hashing threads),
   PostgreSQL, this load generator (bench/_signin_client.py) and the whole machine.
3. The raw argon2 rate R of the same cost: argon2-cffi's verify on 2 threads, in this process,
   for `--raw-seconds`, the server idle.
4. A warm-up: wrk walks every cookie in order `--warmup-passes` times (8), so every session
   has been read once, and by each worker but for ~0.5^passes of them (a request goes to
   whichever worker holds its connection): that is the steady state of sessions in use, which
   a forward-auth check answers from memory. Then `--rounds` rounds of: wrk on `/healthz` (bare
   route, same server: B), wrk on `/authz/nginx` with one of the cookies at random per request
   (F, p99 P), and the same while a paced driver (a thread with its own event loop) starts
   sign-ins at S = R/2 per second, at most `--concurrency` in flight (p99 Q, and the rate
   achieved, which is the S of the summary). The round of median F is kept. Any non-2xx
   answer or failed sign-in is printed and the exit status is 1. `--metrics` turns /metrics on
   and prints the session cache's misses during each idle run (the steady state, checked).

The last line is the summary recorded in bench/README.md.

    .venv/bin/python bench/signin_load.py [--sessions 2000] [--users N] [--duration 10]
        [--connections 64] [--rounds 3] [--concurrency 12] [--redis] [--metrics]
        [--argon2-time-cost 2] [--argon2-memory-kib 19456] [--argon2-parallelism 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import uvloop
from argon2 import PasswordHasher
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from _signin_client import PASSWORD, PacedSignIns, SignInPhase, make_sessions, username
from _totp_load import CLOCK_TICKS, cpu_seconds, postgres_pids
from forward_auth import DOMAIN, WrkResult, free_port, median_round, start_server, wrk
from totp_verify import create_database, drop_database, process_tree
from twofa.config.passwords import PasswordSettings
from twofa.security.passwords import Argon2Cost, PasswordHashing
from twofa.storage.database import create_engine
from twofa.storage.tables import UserRow
from twofa.web.context import SESSION_COOKIE

SECRET: Final = "signin-load-benchmark-secret-key-000000000"  # noqa: S105 (benchmark only)
METRICS_TOKEN: Final = "signin-load-benchmark-metrics-token"  # noqa: S105
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
CHECK_HEADERS: Final = {
    "X-Original-URL": f"http://{DOMAIN}/browse/X-1",
    "X-Forwarded-For": "203.0.113.9",
}


def settings_toml(args: argparse.Namespace, cost: Argon2Cost) -> str:
    channel = f"twofa-bench-{secrets.token_hex(4)}"  # not the channel of tests running now
    feed = f'redis_url = "{REDIS_URL}"\nredis_channel = "{channel}"\n' if args.redis else ""
    metrics = f'[metrics]\nenabled = true\ntoken = "{METRICS_TOKEN}"\n' if args.metrics else ""
    return (
        f'mode = "dev"\nsecret_key = "{SECRET}"\nchange_feed = "auto"\n{feed}'
        f'[access]\ndomains = ["{DOMAIN}"]\n'
        f'[[access.rules]]\ndomain = "{DOMAIN}"\npolicy = "one_factor"\n'
        f"[passwords]\nargon2_time_cost = {cost.time_cost}\n"
        f"argon2_memory_kib = {cost.memory_kib}\nargon2_parallelism = {cost.parallelism}\n"
        f"{metrics}"
    )


async def seed_users(database_url: str, users: int, password_hash: str) -> None:
    """`users` local users sharing one hash, in one Core INSERT (not the measured part)."""
    now = datetime.now(UTC)
    rows = [
        {"username": username(n), "password_hash": password_hash, "created_at": now}
        for n in range(users)
    ]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(UserRow), rows)
    finally:
        await engine.dispose()


def raw_argon2_rate(cost: Argon2Cost, password_hash: str, seconds: float) -> float:
    """Verifications per second of argon2-cffi alone, at `cost`, on 2 threads."""
    hasher = PasswordHasher(cost.time_cost, cost.memory_kib, parallelism=cost.parallelism)
    deadline = time.perf_counter() + seconds

    def spin(_: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            hasher.verify(password_hash, PASSWORD)
            done += 1
        return done

    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        verified = sum(pool.map(spin, range(2)))
    return verified / (time.perf_counter() - began)


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far of each server process (every thread, ended ones included: argon2
    runs its lanes in threads of their own) and of its main thread (the event loop), of
    PostgreSQL's work for the database, and of the whole machine (to show what else ran)."""

    server: dict[int, tuple[float, float]]  # pid -> (every thread, main thread)
    postgres: float
    machine: float

    @classmethod
    def now(cls, server_pid: int, database: str) -> CpuSnapshot:
        server = {}
        for pid in process_tree(server_pid):  # read each time: workers may start late
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                every = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
                server[pid] = (every, cpu_seconds_of_thread(pid, pid))
            except OSError:
                pass  # not a worker any more
        postgres = sum(cpu_seconds(pid) for pid in postgres_pids(database))
        ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle, iowait
        return cls(server, postgres, machine)

    def since(self, before: CpuSnapshot) -> tuple[float, float, float, float, int]:
        """Seconds in between: server, its event loops, PostgreSQL, machine; server processes."""
        was = {pid: before.server.get(pid, (0.0, 0.0)) for pid in self.server}
        every = sum(self.server[pid][0] - was[pid][0] for pid in self.server)
        loops = sum(self.server[pid][1] - was[pid][1] for pid in self.server)
        postgres, machine = self.postgres - before.postgres, self.machine - before.machine
        return every, loops, postgres, machine, len(self.server)


def cpu_seconds_of_thread(pid: int, tid: int) -> float:
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9


def lua_script(cookies_file: Path, warm_up: int | None, path: str = "/authz/nginx") -> str:
    """wrk's requests to `path`, each with one of the cookies: at random, or (with `warm_up`)
    in order until that many have been answered, then a line with the count of answers that
    were not 2xx, and wrk exits (a thread's `stop()` would not end its run). The bare route
    gets the same requests, so wrk's own cost per request (its Lua, on the same two cores)
    weighs on both sides of the ratio alike."""
    headers = ", ".join(f'["{name}"] = "{value}"' for name, value in CHECK_HEADERS.items())
    script = f"""
local cookies = {{}}
for line in io.lines({json.dumps(str(cookies_file))}) do
  cookies[#cookies + 1] = "{SESSION_COOKIE}=" .. line
end
local count, headers, path = #cookies, {{{headers}}}, {json.dumps(path)}
"""
    if warm_up is None:
        return script + RANDOM_COOKIE
    return script + WALK_COOKIES.replace("WANTED", str(warm_up))


RANDOM_COOKIE: Final = """math.randomseed(os.time())
request = function()
  headers["Cookie"] = cookies[math.random(count)]
  return wrk.format("GET", path, headers)
end
"""
WALK_COOKIES: Final = """local at, answered, refused = 0, 0, 0
request = function()
  at = at % count + 1
  headers["Cookie"] = cookies[at]
  return wrk.format("GET", path, headers)
end
response = function(status)
  answered = answered + 1
  if status < 200 or status > 299 then refused = refused + 1 end
  if answered >= WANTED then
    io.stdout:write("warm-up answered " .. answered .. ", not 2xx " .. refused .. "\\n")
    io.stdout:flush()
    os.exit(0)
  end
end
"""


def warm_up(url: str, script: Path, connections: int) -> tuple[float, int]:
    """Runs the walking script; returns its seconds and its answers that were not 2xx."""
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", "600s", "-s", str(script), url]
    began = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finished = re.search(r"warm-up answered \d+, not 2xx (\d+)", output)
    if finished is None:
        raise RuntimeError(f"the warm-up did not finish within 600 s:\n{output}")
    return time.perf_counter() - began, int(finished.group(1))


@dataclass(frozen=True)
class Round:
    bare: WrkResult
    idle: WrkResult
    busy: WrkResult
    sign_ins_per_s: float  # achieved while `busy` ran
    sign_in_failures: Counter[int]  # non-303 answers of the paced driver, by status
    skipped: int  # arrivals not started: `cap` in flight already
    driver_core: float  # the paced driver's CPU, in cores
    cache_misses: str  # during `idle`, with --metrics


def cache_counts(base: str) -> dict[str, float]:
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    answer.raise_for_status()
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "twofa_session_cache_total"
    }


def one_round(
    base: str, args: argparse.Namespace, scripts: tuple[Path, Path], rate: float, first: int
) -> Round:
    bare_script, script = scripts
    bare = wrk(f"{base}/healthz", {}, args.duration, args.connections, bare_script)
    before = cache_counts(base) if args.metrics else {}
    idle = wrk(f"{base}/authz/nginx", {}, args.duration, args.connections, script)
    misses = ""
    if args.metrics:
        after = cache_counts(base)
        hits, missed = (after[k] - before.get(k, 0) for k in ("hit", "miss"))
        misses = f"; session cache {missed:,.0f} misses of {hits + missed:,.0f} look-ups"
    driver = PacedSignIns(base, rate, args.concurrency, args.users, first)
    driver.start()
    time.sleep(1)  # the driver's connections open and its sign-ins under way
    start = time.monotonic()
    busy = wrk(f"{base}/authz/nginx", {}, args.duration, args.connections, script)
    end = time.monotonic()
    driver.stopping.set()
    driver.join()
    signed_in = sum(1 for at, status in driver.answers if status == 303 and start <= at <= end)
    failures = Counter(status for _, status in driver.answers if status != 303)
    return Round(
        bare, idle, busy, signed_in / (end - start), failures, driver.skipped, driver.core, misses
    )


def show(number: int, result: Round, rate: float) -> str:
    def wrk_text(r: WrkResult) -> str:
        return f"{r.rps:,.0f} rps p99 {r.p99_ms:.2f} ms" + (
            f" ({r.errors} errors)" if r.errors else ""
        )

    failures = dict(result.sign_in_failures)
    return (
        f"round {number}: bare {wrk_text(result.bare)}; forward-auth idle {wrk_text(result.idle)}"
        f"{result.cache_misses}; during sign-ins {wrk_text(result.busy)}, sign-ins "
        f"{result.sign_ins_per_s:.1f}/s of {rate:.1f}/s asked (failed: {failures or 'none'}; "
        f"skipped at the cap: {result.skipped}; driver {100 * result.driver_core:.0f}% of a core)"
    )


def summary(phase: SignInPhase, raw: float, sessions: int, kept: Round) -> str:
    rate = len(phase.cookies) / phase.seconds
    idle, bare = kept.idle, kept.bare
    return (
        f"hot path: sign-in {rate:.1f}/s ({100 * rate / raw:.0f}% of raw argon2 {raw:.1f}/s); "
        f"forward-auth over {sessions:,} sessions {idle.rps:,.0f} rps "
        f"({100 * idle.rps / bare.rps:.0f}% of bare {bare.rps:,.0f} rps), "
        f"p99 {idle.p99_ms:.2f} ms idle, {kept.busy.p99_ms:.2f} ms during "
        f"{kept.sign_ins_per_s:.1f} sign-ins/s"
    )


def measure(
    base: str,
    server_pid: int,
    database: str,
    args: argparse.Namespace,
    cost: Argon2Cost,
    password_hash: str,
    folder: Path,
    problems: list[str],
) -> str:
    """Steps 2-4 of the docstring against the running server; returns the summary line."""
    print(f"{args.sessions:,} sign-ins, {args.concurrency} at a time, {args.users:,} users:")
    before = CpuSnapshot.now(server_pid, database)
    phase = uvloop.run(make_sessions(base, args.sessions, args.users, args.concurrency))
    *seconds, processes = CpuSnapshot.now(server_pid, database).since(before)
    server, loops, postgres, machine = (1000 * s / args.sessions for s in seconds)
    print(
        f"sign-in: {len(phase.cookies):,} sessions in {phase.seconds:.1f} s = "
        f"{len(phase.cookies) / phase.seconds:.1f}/s; answers {dict(phase.statuses)}; "
        f"CPU per sign-in: server {server:.1f} ms ({processes} processes; their event loops "
        f"{loops:.1f} ms, the other threads (hashing) "
        f"{server - loops:.1f} ms), PostgreSQL {postgres:.1f} ms, load generator "
        f"{phase.cpu_ms:.1f} ms, the machine {machine:.1f} ms "
        f"({machine * args.sessions / 1000 / phase.seconds:.2f} cores busy)"
    )
    failed = {status: n for status, n in phase.statuses.items() if status not in (303, 503)}
    if failed:
        problems.append(f"sign-ins failed (status: count): {failed}")
    if phase.statuses[503]:
        problems.append(f"{phase.statuses[503]} sign-ins were answered 503 busy (tried again)")
    if not phase.cookies:
        raise SystemExit("no session was made")
    raw = raw_argon2_rate(cost, password_hash, args.raw_seconds)
    print(f"raw argon2: {raw:.1f} verifications/s on 2 threads ({args.raw_seconds:g} s)")
    cookies_file = folder / "cookies.txt"
    cookies_file.write_text("\n".join(phase.cookies) + "\n")
    warm, random = folder / "warm.lua", folder / "random.lua"
    bare = folder / "bare.lua"
    warm.write_text(lua_script(cookies_file, args.warmup_passes * len(phase.cookies)))
    random.write_text(lua_script(cookies_file, None))
    bare.write_text(lua_script(cookies_file, None, "/healthz"))
    took, refused = warm_up(f"{base}/authz/nginx", warm, args.connections)
    print(
        f"warm-up: {args.warmup_passes} passes over the cookies in {took:.1f} s, "
        f"{refused} answers not 2xx"
    )
    if refused:
        problems.append(f"the warm-up had {refused} answers that were not 2xx")
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        result = one_round(base, args, (bare, random), raw / 2, number * 100_000)
        print(show(number, result, raw / 2), flush=True)
        rounds.append(result)
    runs = [run for r in rounds for run in (r.bare, r.idle, r.busy)]
    if errors := sum(run.errors for run in runs):
        problems.append(f"wrk counted {errors} non-2xx answers or socket errors")
    if failures := sum((r.sign_in_failures for r in rounds), Counter[int]()):
        problems.append(f"paced sign-ins failed (status: count): {dict(failures)}")
    kept = median_round([r.idle for r in rounds])
    return summary(phase, raw, len(phase.cookies), next(r for r in rounds if r.idle is kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="sign-ins made, N")
    parser.add_argument("--users", type=int, help="users signing in (default: --sessions)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=12, help="sign-ins in flight")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-passes", type=int, default=8)
    parser.add_argument("--raw-seconds", type=float, default=5.0)
    parser.add_argument("--redis", action="store_true", help="the change feed through Redis")
    parser.add_argument(
        "--metrics", action="store_true", help="/metrics on, to count session cache misses"
    )
    defaults = PasswordSettings()
    parser.add_argument("--argon2-time-cost", type=int, default=2)
    parser.add_argument("--argon2-memory-kib", type=int, default=19_456)
    parser.add_argument("--argon2-parallelism", type=int, default=defaults.argon2_parallelism)
    args = parser.parse_args()
    args.users = args.users or args.sessions
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    cost = Argon2Cost(args.argon2_time_cost, args.argon2_memory_kib, args.argon2_parallelism)
    feed = "Redis" if args.redis else "PostgreSQL LISTEN/NOTIFY"
    print(
        f"argon2id time_cost={cost.time_cost} memory_kib={cost.memory_kib} "
        f"parallelism={cost.parallelism}; {args.workers} workers; change feed: {feed}"
    )
    began = time.perf_counter()
    problems: list[str] = []
    name, database_url = asyncio.run(create_database())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            password_hash = PasswordHashing(cost).hash(PASSWORD)
            asyncio.run(seed_users(database_url, args.users, password_hash))
            config = folder / "twofa.toml"
            config.write_text(settings_toml(args, cost))
            port, log = free_port(), folder / "server.log"
            server = start_server(config, database_url, port, args.workers, log)
            try:
                line = measure(
                    f"http://127.0.0.1:{port}",
                    server.pid,
                    name,
                    args,
                    cost,
                    password_hash,
                    folder,
                    problems,
                )
            except BaseException:
                problems.append("the run failed")
                raise
            finally:
                server.terminate()
                server.wait(timeout=30)
                if problems:
                    print(f"server log (end):\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        asyncio.run(drop_database(name))
    print(
        f"({args.connections} connections, {args.duration} s per wrk run, {args.rounds} "
        f"rounds, the median by forward-auth rps; {time.perf_counter() - began:.0f} s in all)"
    )
    for problem in problems:
        print(f"!!! PROBLEM: {problem}")
    print(line)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()

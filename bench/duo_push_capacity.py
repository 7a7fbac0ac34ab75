"""How many pending Duo pushes one twofa process can hold, and how fast it sees an approval.

Starts the simulator in its own process, starts N pushes (`auth` with async=1) through
twofa's Duo client, keeps every one long-polling `auth_status`, then approves them in batches
from a controller and measures, per push, the time from the approval request to the client
seeing `allow`. Prints its figures; the last line is the summary recorded in bench/README.md.

    .venv/bin/python bench/duo_push_capacity.py [--pushes 10000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

from twofa.cli.runtime import tune_garbage_collector
from twofa.duo import (
    AuthRequest,
    DuoAuthClient,
    DuoCredentials,
    DuoEndpoint,
    DuoTimeouts,
    make_http_client,
)
from twofa.duo.models import AuthResult, Factor, PushRequest

IKEY = "DIBENCHMARK000000001"
SKEY = "benchmark-secret-key-benchmark-secret-k"
USERS = 1000


@dataclass
class Tally:
    started_at: dict[str, float] = field(default_factory=dict)
    long_polling: set[str] = field(default_factory=set)
    approved_at: dict[str, float] = field(default_factory=dict)
    allowed_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    batch_done: asyncio.Event = field(default_factory=asyncio.Event)
    batch_left: int = 0


def raise_file_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_simulator(port: int, hold_s: float) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "twofa.cli.main", "simulator", "serve",
        "--port", str(port), "--ikey", IKEY, "--skey", SKEY,
        "--long-poll-hold", str(hold_s), "--push-timeout", "900", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, preexec_fn=raise_file_limit)


async def wait_until_up(base_url: str) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=base_url) as probe:
        while True:
            try:
                await probe.get("/auth/v2/ping")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def one_push(
    client: DuoAuthClient, username: str, tally: Tally, start_gate: asyncio.Semaphore
) -> None:
    request = AuthRequest(
        factor=Factor.PUSH,
        username=username,
        push=PushRequest(type="Benchmark login", pushinfo=(("Application", "bench"),)),
        ipaddr="127.0.0.1",
    )
    try:
        async with start_gate:
            txid = await client.start_auth(request)
            tally.started_at[txid] = time.perf_counter()
        while True:
            tally.long_polling.add(txid)
            outcome = await client.auth_status(txid)
            if outcome.is_final:
                break
        tally.allowed_at[txid] = time.perf_counter()
        if outcome.result is not AuthResult.ALLOW:
            tally.errors.append(f"{txid}: {outcome.status.value}")
        tally.batch_left -= 1
        if tally.batch_left <= 0:
            tally.batch_done.set()
    except Exception as exc:  # a benchmark counts every failure instead of stopping at one
        tally.errors.append(f"{type(exc).__name__}: {exc}")


async def approve_in_batches(base_url: str, tally: Tally, batch: int) -> None:
    txids = list(tally.started_at)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as controller:
        for offset in range(0, len(txids), batch):
            chosen = txids[offset : offset + batch]
            tally.batch_done.clear()
            tally.batch_left = len(chosen)
            sent = time.perf_counter()
            for txid in chosen:
                tally.approved_at[txid] = sent
            answer = await controller.post("/_sim/batch/approve", json={"txids": chosen})
            refused = answer.json()["refused"]
            tally.errors.extend(f"{txid}: {why}" for txid, why in refused.items())
            try:
                await asyncio.wait_for(tally.batch_done.wait(), timeout=60)
            except TimeoutError:
                tally.errors.append(f"batch at {offset}: not all allowed within 60 s")


async def run(
    pushes: int, batch: int, start_concurrency: int, port: int, hold_s: float, tune_gc: bool
) -> int:
    base_url = f"http://127.0.0.1:{port}"
    simulator = start_simulator(port, hold_s)
    try:
        await wait_until_up(base_url)
        async with httpx.AsyncClient(base_url=base_url) as control:
            for index in range(USERS):
                phone = [{"type": "phone", "name": "iPhone"}]
                await control.post(
                    "/_sim/users", json={"username": f"user{index}", "devices": phone}
                )
        endpoint = DuoEndpoint.parse(base_url, allow_custom_host=True)  # the simulator
        tally = Tally()
        async with make_http_client(endpoint, max_connections=pushes + 64) as http:
            client = DuoAuthClient(
                http,
                credentials=DuoCredentials(IKEY, SKEY),
                endpoint=endpoint,
                timeouts=DuoTimeouts(connect=30, read=60, long_poll_read=hold_s + 30),
            )
            gate = asyncio.Semaphore(start_concurrency)
            began = time.perf_counter()
            tasks = [
                asyncio.create_task(one_push(client, f"user{i % USERS}", tally, gate))
                for i in range(pushes)
            ]
            while len(tally.long_polling) + len(tally.errors) < pushes:  # noqa: ASYNC110 (progress poll)
                await asyncio.sleep(0.05)
            start_rate = pushes / (time.perf_counter() - began)
            print(f"started {len(tally.started_at)} pushes at {start_rate:,.0f} pushes/s")
            await asyncio.sleep(1.0)  # let the last long-polls reach the simulator
            if tune_gc:
                tune_garbage_collector()  # as `twofa` servers do at start-up
            await approve_in_batches(base_url, tally, batch)
            await asyncio.gather(*tasks)
        latencies = sorted(
            (tally.allowed_at[txid] - tally.approved_at[txid]) * 1000
            for txid in tally.allowed_at
            if txid in tally.approved_at
        )
        p50 = statistics.median(latencies) if latencies else float("nan")
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        client_rss, simulator_rss = peak_rss_mb(), peak_rss_mb(simulator.pid)
        print(f"approval to allow: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(latencies)} samples)")
        print(f"peak RSS: client {client_rss:.0f} MB, simulator {simulator_rss:.0f} MB")
        for error in tally.errors[:5]:
            print(f"error: {error}")
        print(
            f"push capacity: {pushes} pending, {len(tally.errors)} errors, "
            f"client RSS {client_rss:.0f} MB, approval-to-allow p99 {p99:.0f} ms"
        )
        return 1 if tally.errors else 0
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--start-concurrency", type=int, default=256)
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--hold", type=float, default=30.0, help="simulator long-poll hold (s)")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep Python's GC defaults in the client"
    )
    args = parser.parse_args()
    limit = raise_file_limit()
    if limit < args.pushes + 256:
        sys.exit(f"need {args.pushes + 256} open files, the hard limit is {limit}")
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"batch {args.batch}; hold {args.hold:g} s; client GC "
        f"{'default' if args.default_gc else 'tuned'}"
    )
    outcome = run(
        args.pushes, args.batch, args.start_concurrency, args.port, args.hold, not args.default_gc
    )
    sys.exit(asyncio.run(outcome))


if __name__ == "__main__":
    main()

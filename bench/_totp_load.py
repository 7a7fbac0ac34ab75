"""The load generator of bench/totp_verify.py, in its own process: virtual users on keep-alive
connections, each verification a GET of the TOTP page (a fresh challenge) and a POST of a valid
code; prints one JSON object with the figures of the measured window.

Written on raw uvloop protocols with httptools' C parser rather than an HTTP client library:
it shares two cores with the server and PostgreSQL, so every microsecond it spends is taken
from what it measures.

    python bench/_totp_load.py --port P --work FILE [--concurrency 64] [--warmup 3] [--duration 15]

FILE holds a JSON list of `[session_cookie, totp_secret]`, one per user. Every user verifies
once with the code of the current time step (a sign-in: the cookie is a password-level
session), then, after every other user had their turn, once more with the code of the next
step, using the signed-in session the first verification returned (a step-up): each user
verifies at most twice, in increasing step order, so the single-use rule never gets in the way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop

from twofa.clock import SystemClock
from twofa.methods.totp import hotp, secret_bytes, time_step

CHALLENGE_FIELD = b'name="challenge" value="'
CSRF_FIELD = b'name="csrf_token" value="'
SESSION_COOKIE = b"twofa_session="
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SHARED_POSTGRES_WORK = ("walwriter", "checkpointer", "background writer")


class HttpError(Exception):
    """A response the verification flow does not expect."""


@dataclass
class Response:
    status: int = 0
    set_cookie: bytes = b""
    body: bytearray = field(default_factory=bytearray)


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight at a time, like a browser tab."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._response = Response()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"unparsable response: {exc}"))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    # httptools calls these while parsing
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"set-cookie" and value.startswith(SESSION_COOKIE):
            self._response.set_cookie = value

    def on_body(self, body: bytes) -> None:
        self._response.body += body

    def on_message_complete(self) -> None:
        self._response.status = self._parser.get_status_code()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._response)
        self._response = Response()

    async def send(self, request: bytes) -> Response:
        if self._transport is None or self.closed:
            raise ConnectionError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def field_value(body: bytearray, marker: bytes) -> bytes:
    start = body.find(marker)
    if start < 0:
        raise HttpError(f"no {marker.decode()!r} on the page")
    start += len(marker)
    return bytes(body[start : body.index(b'"', start)])


@dataclass
class Tally:
    warm_until: float
    stop_at: float
    latencies_ms: list[float] = field(default_factory=list)  # completed inside the window
    ok_total: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    exhausted_at: float | None = None
    last_done: float = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)


class VirtualUser:
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._connection: Connection | None = None
        host_header = f"Host: {host}:{port}\r\n".encode()
        self._get = b"GET /2fa/m/totp HTTP/1.1\r\n" + host_header + b"Cookie: twofa_session="
        self._post = (
            b"POST /2fa/m/totp HTTP/1.1\r\n"
            + host_header
            + b"Content-Type: application/x-www-form-urlencoded\r\nCookie: twofa_session="
        )

    async def _connected(self) -> Connection:
        if self._connection is None or self._connection.closed:
            loop = asyncio.get_running_loop()
            _, self._connection = await loop.create_connection(Connection, self._host, self._port)
        return self._connection

    async def verify(self, cookie: bytes, code: bytes) -> bytes:
        """One whole verification: a fresh challenge, then a valid code for it (303); returns
        the new session cookie."""
        connection = await self._connected()
        page = await connection.send(self._get + cookie + b"\r\n\r\n")
        if page.status != 200:
            raise HttpError(f"GET /2fa/m/totp: {page.status} {bytes(page.body[:200])!r}")
        challenge = field_value(page.body, CHALLENGE_FIELD)
        csrf = field_value(page.body, CSRF_FIELD)
        form = b"csrf_token=" + csrf + b"&challenge=" + challenge + b"&code=" + code
        length = b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n"
        answer = await connection.send(self._post + cookie + b"\r\n" + length + form)
        if answer.status != 303 or not answer.set_cookie:
            raise HttpError(f"POST /2fa/m/totp: {answer.status} {bytes(answer.body[:200])!r}")
        return answer.set_cookie[len(SESSION_COOKIE) :].split(b";", 1)[0]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@dataclass
class Account:
    cookie: bytes
    codes: tuple[bytes, ...]  # for this time step and the next
    verified: int = 0
    busy: bool = False


async def drive(user: VirtualUser, work: Iterator[tuple[Account, int]], tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    try:
        while (began := loop.time()) < tally.stop_at:
            try:
                account, turn = next(work)
            except StopIteration:
                tally.exhausted_at = tally.exhausted_at or began
                return
            if account.busy:  # too few users for this concurrency
                tally.error("a user's second turn came while the first was running: raise --users")
                continue
            if account.verified != turn:  # its first verification failed: no signed-in session
                continue
            account.busy = True
            try:
                account.cookie = await user.verify(account.cookie, account.codes[turn])
            except (HttpError, OSError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}")
                continue
            finally:
                account.busy = False
            account.verified += 1
            done = loop.time()
            tally.ok_total += 1
            if tally.warm_until <= done <= tally.stop_at:
                tally.latencies_ms.append((done - began) * 1000)
                tally.last_done = done
    finally:
        user.close()


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads so far, to the nanosecond (/proc/PID/stat counts
    in 10 ms ticks: too coarse for PostgreSQL backends that each work a little)."""
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total_ns += int((task / "schedstat").read_text().split()[0])
    except OSError:
        pass  # the process or a thread ended meanwhile
    return total_ns / 1e9


def postgres_pids(database: str) -> list[int]:
    """The backends serving `database` and the server's shared writers (WAL, checkpoints),
    not the backends of other databases (other jobs may share the server)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f" {database} " in title or any(w in title for w in SHARED_POSTGRES_WORK):
            found.append(int(entry.name))
    return found


def cpu_snapshot(server_pids: list[int], database: str) -> dict[str, Any]:
    """CPU seconds so far of the server processes, PostgreSQL's work for it, this process and
    the whole machine (to show what else ran meanwhile)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return {
        "server": sum(cpu_seconds(pid) for pid in server_pids),
        "postgres": {pid: cpu_seconds(pid) for pid in postgres_pids(database)},
        "load": cpu_seconds(os.getpid()),
        "machine": (sum(ticks) - idle) / CLOCK_TICKS,
    }


def cores_busy(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """Cores used in between; PostgreSQL backends that started meanwhile count from zero,
    those that ended meanwhile are lost (ours live as long as the server's pool)."""
    postgres = sum(cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items())
    busy = {name: (after[name] - before[name]) / seconds for name in ("server", "load", "machine")}
    return {**busy, "postgres": postgres / seconds}


async def run(args: argparse.Namespace, items: list[list[Any]]) -> dict[str, Any]:
    step = time_step(SystemClock().now())
    accounts = [
        Account(
            cookie.encode(), tuple(hotp(secret_bytes(secret), step + n).encode() for n in (0, 1))
        )
        for cookie, secret in items
    ]
    work = iter([(account, turn) for turn in (0, 1) for account in accounts])
    loop = asyncio.get_running_loop()
    start = loop.time()
    tally = Tally(warm_until=start + args.warmup, stop_at=start + args.warmup + args.duration)
    users = [VirtualUser(args.host, args.port) for _ in range(args.concurrency)]
    drivers = asyncio.gather(*(drive(user, work, tally) for user in users))
    await asyncio.sleep(args.warmup)
    before, measured_from = cpu_snapshot(args.server_pid, args.database), loop.time()
    done_before = tally.ok_total
    await drivers
    after, measured_for = cpu_snapshot(args.server_pid, args.database), loop.time() - measured_from
    cores = cores_busy(before, after, measured_for)
    done_meanwhile = max(tally.ok_total - done_before, 1)
    window = args.duration
    if tally.exhausted_at is not None:  # measured until the last verification ended
        window = max(tally.last_done - tally.warm_until, 1e-3)
    latencies = sorted(tally.latencies_ms)
    return {
        "verifications": len(latencies),
        "window_s": window,
        "per_s": len(latencies) / window,
        "p50_ms": latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] if latencies else float("nan"),
        "ok_total": tally.ok_total,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "exhausted": tally.exhausted_at is not None,
        "cpu_cores": cores,
        # CPU per verification: steadier than the rate when other jobs share the machine
        "cpu_ms_per_verification": {
            name: 1000 * cores[name] * measured_for / done_meanwhile
            for name in ("server", "postgres", "load")
        },
        "load_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work", required=True, help="JSON list of [cookie, secret]")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--server-pid", type=int, action="append", default=[], help="CPU split")
    parser.add_argument("--database", default="", help="PostgreSQL database (CPU split)")
    args = parser.parse_args()
    items = json.loads(Path(args.work).read_text())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(run(args, items))))


if __name__ == "__main__":
    main()

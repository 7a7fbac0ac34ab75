"""The sign-ins of bench/signin_load.py: a browser's GET /login and POST /login over httpx,
as many as asked a few at a time (`make_sessions`), or at a steady rate in a thread of their
own (`PacedSignIns`)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final

import httpx
import uvloop

from twofa.web.context import CSRF_FIELD, SESSION_COOKIE

PASSWORD: Final = "bench-password-1"  # noqa: S105 (every user's)
CSRF_INPUT: Final = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')


def username(n: int) -> str:
    return f"user{n:05d}"


def address(n: int, block: int) -> str:
    """A browser's address from 198.18.0.0/15 (set aside for benchmarks), one per sign-in."""
    return f"198.{18 + block}.{n >> 8 & 255}.{n & 255}"


def signin_client(base: str, connections: int) -> httpx.AsyncClient:
    """Keep-alive connections shared by concurrent sign-ins, a cookie jar that keeps nothing:
    each sign-in sends its own session cookie."""
    keep_nothing = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base, cookies=keep_nothing, limits=limits, timeout=30)


def session_cookie(response: httpx.Response) -> str | None:
    for line in response.headers.get_list("set-cookie"):
        name, _, rest = line.partition("=")
        if name.strip() == SESSION_COOKIE:
            return rest.split(";", 1)[0]
    return None


@dataclass(frozen=True)
class SignIn:
    status: int  # 303 signed in; else the answer that was not (0: none; 1: 303 but not in)
    token: str | None = None


async def sign_in(client: httpx.AsyncClient, user: str, ip: str) -> SignIn:
    """GET /login then POST /login, as a browser does; a 303 to anywhere but the second
    factor's page is a signed-in session."""
    forwarded = {"X-Forwarded-For": ip}
    try:
        page = await client.get("/login", headers=forwarded)
        anonymous, form = session_cookie(page), CSRF_INPUT.search(page.text)
        if page.status_code != 200 or anonymous is None or form is None:
            return SignIn(page.status_code)
        answer = await client.post(
            "/login",
            headers={**forwarded, "Cookie": f"{SESSION_COOKIE}={anonymous}"},
            data={CSRF_FIELD: form.group(1), "username": user, "password": PASSWORD},
        )
    except httpx.HTTPError:
        return SignIn(0)
    token = session_cookie(answer)
    if answer.status_code != 303 or token is None or answer.headers["location"] == "/2fa":
        return SignIn(answer.status_code if answer.status_code != 303 else 1)
    return SignIn(303, token)


@dataclass(frozen=True)
class SignInPhase:
    cookies: list[str]
    seconds: float
    statuses: Counter[int]  # every answer, retried 503s included
    cpu_ms: float  # this process's CPU per sign-in (the load generator's share)


async def make_sessions(base: str, sessions: int, users: int, concurrency: int) -> SignInPhase:
    """`sessions` sign-ins of `users` users, `concurrency` at a time; a 503 (the hashing pool
    full) is tried again, anything else is a failure."""
    cookies: list[str] = []
    statuses: Counter[int] = Counter()
    numbers = iter(range(sessions))
    step = max(sessions // 10, 1)

    async def signer(client: httpx.AsyncClient) -> None:
        for n in numbers:
            while (
                outcome := await sign_in(client, username(n % users), address(n, 0))
            ).status == 503:
                statuses[503] += 1
                await asyncio.sleep(0.05)
            statuses[outcome.status] += 1
            if outcome.token is not None:
                cookies.append(outcome.token)
            if (n + 1) % step == 0:
                print(f"  {n + 1:,} sign-ins, {time.perf_counter() - began:.0f} s", flush=True)

    cpu, began = time.process_time(), time.perf_counter()
    async with signin_client(base, concurrency) as client:
        await asyncio.gather(*(signer(client) for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    cpu_ms = 1000 * (time.process_time() - cpu) / max(sessions, 1)
    return SignInPhase(cookies, seconds, statuses, cpu_ms)


class PacedSignIns(threading.Thread):
    """Sign-ins started `rate` times a second on schedule whatever the answers (an arrival
    skipped only when `cap` are in flight already), in a thread with its own event loop: wrk
    and the server are other processes, so its CPU is the only thing it shares with them."""

    def __init__(self, base: str, rate: float, cap: int, users: int, first: int) -> None:
        super().__init__(daemon=True)
        self.base, self.rate, self.cap, self.users, self.first = base, rate, cap, users, first
        self.stopping = threading.Event()
        self.answers: list[tuple[float, int]] = []  # (time.monotonic() at the answer, status)
        self.started = self.skipped = 0
        self.core = 0.0  # its CPU, in cores

    def run(self) -> None:
        cpu, began = time.thread_time(), time.monotonic()
        uvloop.run(self._drive())
        self.core = (time.thread_time() - cpu) / (time.monotonic() - began)

    async def _drive(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        async with signin_client(self.base, self.cap) as client:
            began = time.monotonic()
            while not self.stopping.is_set():
                delay = began + self.started / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                n, self.started = self.first + self.started, self.started + 1
                if len(in_flight) >= self.cap:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self._one(client, n))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.gather(*in_flight)

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        outcome = await sign_in(client, username(n % self.users), address(n, 1))
        self.answers.append((time.monotonic(), outcome.status))

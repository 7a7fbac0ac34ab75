"""Load generator for bench/totp_verify.py, run in its own process so that it does not share
the server's event loop: each prepared user does one TOTP verification (GET the challenge page,
POST a valid code, expect a 303), many users at a time. Prints one JSON line of results.

    .venv/bin/python bench/_totp_load.py PLAN.json
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import uvloop

from twofa.methods.totp import hotp, secret_bytes, time_step

CHALLENGE = re.compile(r'name="challenge" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ERROR = re.compile(r'class="error"[^>]*>([^<]*)<')
TITLE = re.compile(r"<title>([^<]*)<")


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_start: float = float("inf")
    last_end: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(frozen=True)
class User:
    cookie: str
    secret: str


async def verify_once(http: aiohttp.ClientSession, base: str, user: User, tally: Tally) -> None:
    headers = {"Cookie": f"twofa_session={user.cookie}"}
    started = time.perf_counter()
    tally.first_start = min(tally.first_start, started)
    try:
        async with http.get(f"{base}/2fa/m/totp", headers=headers, allow_redirects=False) as page:
            body = await page.text()
            if page.status != 200:
                tally.error(f"GET {page.status}")
                return
        challenge, csrf = CHALLENGE.search(body), CSRF.search(body)
        if challenge is None or csrf is None:
            tally.error("GET page without challenge or csrf_token")
            return
        # The code of the current step, computed when the user would read it off the app.
        code = hotp(secret_bytes(user.secret), time_step(datetime.now(UTC)))
        form = {"csrf_token": csrf.group(1), "challenge": challenge.group(1), "code": code}
        async with http.post(
            f"{base}/2fa/m/totp", data=form, headers=headers, allow_redirects=False
        ) as answer:
            answer_body = await answer.text()
            if answer.status != 303:
                shown = ERROR.search(answer_body) or TITLE.search(answer_body)
                tally.error(f"POST {answer.status}: {shown.group(1) if shown else '?'}")
                return
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.error(type(exc).__name__)
        return
    ended = time.perf_counter()
    tally.last_end = max(tally.last_end, ended)
    tally.latencies_ms.append((ended - started) * 1000)


async def drive(bases: list[str], users: list[User], concurrency: int, deadline: float) -> Tally:
    """`concurrency` virtual browsers take the next unused user until none is left or the
    deadline passes; users are spread over the servers round robin."""
    tally = Tally()
    queue = iter(enumerate(users))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    # The cookie of each request is set by hand: no jar, so Set-Cookie leaks into nothing.
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:

        async def browser() -> None:
            for index, user in queue:
                if time.perf_counter() >= deadline:
                    return
                await verify_once(http, bases[index % len(bases)], user, tally)

        await asyncio.gather(*(browser() for _ in range(concurrency)))
    return tally


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    users = [User(u["cookie"], u["secret"]) for u in plan["users"]]
    warmup, measured = users[: plan["warmup"]], users[plan["warmup"] :]
    bases, concurrency = plan["bases"], plan["concurrency"]
    # Fills the connection pools of client and servers and the servers' caches; not counted.
    warm = await drive(bases, warmup, concurrency, time.perf_counter() + plan["duration"])
    tally = await drive(bases, measured, concurrency, time.perf_counter() + plan["duration"])
    elapsed = max(tally.last_end - tally.first_start, 1e-9)
    return {
        "users": len(measured),
        "warmup_errors": sum(warm.errors.values()),
        "successes": len(tally.latencies_ms),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "elapsed_s": elapsed,
        "rate": len(tally.latencies_ms) / elapsed,
        "p50_ms": percentile(tally.latencies_ms, 0.50),
        "p99_ms": percentile(tally.latencies_ms, 0.99),
    }


if __name__ == "__main__":
    gc.freeze()  # the plan is long-lived; collections during the run only cost time
    with open(sys.argv[1], encoding="utf-8") as plan_file:
        loaded = json.load(plan_file)
    print(json.dumps(uvloop.run(main(loaded))))

"""Gateway nodes as real `twofa serve` processes on loopback ports (no memory shared), for the
attack tests that hammer `/authz/nginx` over HTTP the way nginx's `auth_request` does, and a
browser's moves against them (sign in, sign out) and an admin's (the API with a token): every
way there is to end bob's session, done on one node while all are hammered."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.gateway import PASSWORDS, SECRET, csrf_from
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.revocation import PROMISE_S, PromiseBroken, database, seeded, started, until
from tests.support.servers import free_port
from twofa.config import load_settings
from twofa.domain.api_scopes import parse_scopes

APP = "app.example.test"


def config_text(database_url: str, **top: object) -> str:
    """Settings for every node: the protected app, whose /library is for group `readers`."""
    extra = "".join(f"{key} = {value!r}\n" for key, value in top.items())
    return f"""
mode = "dev"
secret_key = "{SECRET}"
database_url = "{database_url}"
public_url = "http://127.0.0.1:8000"
{extra}
[access]
domains = ["{APP}"]
[[access.rules]]
domain = "{APP}"
resources = ["/library/*"]
groups = ["readers"]
policy = "one_factor"
[[access.rules]]
domain = "{APP}"
resources = ["/library/*"]
policy = "deny"
[[access.rules]]
domain = "{APP}"
policy = "one_factor"
"""


@dataclass
class ServedNode:
    port: int
    config: Path
    environ: dict[str, str]
    log: Path
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "twofa.cli.main", "--config", str(self.config)),
                    *("serve", "--host", "127.0.0.1", "--port", str(self.port)),
                    *("--no-access-log", "--workers", str(self.workers)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as a crashed machine."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    async def wait_ready(self, within_s: float = 30) -> None:
        """Ready, with its change feed live (`/healthz/ready` says which)."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient() as probe:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"node exited: {self.log.read_text()[-3000:]}")
                try:
                    answer = await probe.get(f"{self.url}/healthz/ready")
                    if answer.status_code == 200 and answer.json().get("change_feed") == "live":
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"node {self.port} never ready: {self.log.read_text()[-3000:]}")


def authz(node: ServedNode, cookie_header: str, path: str = "/browse/X-1") -> httpx.Request:
    """What nginx asks a node about one request to the app."""
    return httpx.Request(
        "GET",
        f"{node.url}/authz/nginx",
        headers={"Cookie": cookie_header, "X-Original-URL": f"https://{APP}{path}"},
    )


async def sign_in(node: ServedNode, username: str, password: str) -> str:
    """A browser signs in on `node`; its session cookie."""
    async with httpx.AsyncClient(base_url=node.url) as browser:
        page = await browser.get("/login")
        answer = await browser.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_from(page.text)},
        )
        assert answer.status_code == 303, answer.text
        return str(browser.cookies["twofa_session"])


async def sign_out(node: ServedNode, cookie: str) -> None:
    async with httpx.AsyncClient(base_url=node.url, cookies={"twofa_session": cookie}) as browser:
        home = await browser.get("/")
        assert home.status_code == 200, home.text
        answer = await browser.post("/logout", data={"csrf_token": csrf_from(home.text)})
        assert answer.status_code in (302, 303), answer.text


@dataclass
class Answer:
    sent: float  # loop times
    status: int | None  # None: no answer in time, or a broken connection


@dataclass
class Hammer:
    """Many concurrent checks of one cookie against some nodes, for as long as it runs."""

    nodes: Sequence[ServedNode]
    cookie_header: str
    path: str = "/browse/X-1"
    per_node: int = 8
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Hammer:
        self._client = httpx.AsyncClient(
            timeout=2.0, limits=httpx.Limits(max_connections=len(self.nodes) * self.per_node)
        )
        self._tasks = [
            asyncio.create_task(self._hit(node))
            for node in self.nodes
            for _ in range(self.per_node)
        ]
        return self

    async def _hit(self, node: ServedNode) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            sent = loop.time()
            try:
                status: int | None = (
                    await self._client.send(authz(node, self.cookie_header, self.path))
                ).status_code
            except httpx.HTTPError:
                status = None
            self.answers.append(Answer(sent, status))

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._client.aclose()

    def allowed_sent_after(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.sent > moment and a.status == 200]

    def sent_after(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.sent > moment]


@dataclass
class Cluster:
    nodes: list[ServedNode]
    api_token: str
    password: str = PASSWORDS["bob"]

    async def api(self, node: ServedNode, method: str, path: str, **json: object) -> None:
        async with httpx.AsyncClient(base_url=node.url) as client:
            answer = await client.request(
                method,
                f"/api/v1{path}",
                headers={"Authorization": f"Bearer {self.api_token}"},
                json=json or None,
            )
        assert answer.status_code in (200, 201, 204), answer.text

    async def new_password(self, node: ServedNode) -> None:
        self.password = f"a-brand-new-password-{secrets.token_hex(4)}"
        await self.api(node, "PATCH", "/users/bob", password=self.password)

    async def recreate_bob(self, node: ServedNode) -> None:
        await self.api(node, "POST", "/users", username="bob", password=self.password)
        await self.api(node, "PUT", "/groups/readers/members/bob")


@asynccontextmanager
async def served_cluster(tmp_path: Path, feed: str, nodes: int = 3) -> AsyncIterator[Cluster]:
    environ = {"PATH": "/usr/bin:/bin", "TWOFA_CHANGE_FEED": feed}
    if feed == "redis":
        environ |= {
            "TWOFA_REDIS_URL": await reachable_redis(),
            "TWOFA_REDIS_CHANNEL": own_channel(),
        }
    async with database("postgresql", tmp_path) as db_url:
        config = tmp_path / "twofa.toml"
        config.write_text(config_text(db_url))
        settings = await seeded(load_settings(config, environ=environ))
        async with started(settings) as admin:
            await admin.accounts.add_group("readers")
            await admin.accounts.set_membership("readers", "bob", True)
            issued = await admin.api_tokens.create(
                "adversary", created_by="cli", scopes=parse_scopes(["read", "users"]), days=1
            )
        served = [
            ServedNode(free_port(), config, environ, tmp_path / f"node-{i}.log")
            for i in range(nodes)
        ]
        try:
            for node in served:
                node.start()
            for node in served:
                await node.wait_ready()
            yield Cluster(served, issued.token)
        finally:
            for node in served:
                node.stop()


Revocation = Callable[[Cluster, ServedNode, str], Awaitable[None]]
REVOCATIONS: dict[str, Revocation] = {
    # what ends bob's session (or, for the group, his way into /library), done on one node
    "sign-out": lambda c, node, cookie: sign_out(node, cookie),
    "new password": lambda c, node, _: c.new_password(node),
    "disabled": lambda c, node, _: c.api(node, "PATCH", "/users/bob", enabled=False),
    "2FA reset": lambda c, node, _: c.api(node, "POST", "/users/bob/reset-2fa"),
    "end sessions": lambda c, node, _: c.api(node, "POST", "/users/bob/end-sessions"),
    "group removal": lambda c, node, _: c.api(node, "DELETE", "/groups/readers/members/bob"),
    "deleted": lambda c, node, _: c.api(node, "DELETE", "/users/bob"),
}
RESTORE: dict[str, Callable[[Cluster, ServedNode], Awaitable[None]]] = {
    "disabled": lambda c, node: c.api(node, "PATCH", "/users/bob", enabled=True),
    "group removal": lambda c, node: c.api(node, "PUT", "/groups/readers/members/bob"),
    "deleted": lambda c, node: c.recreate_bob(node),
}


async def hammer_through(cluster: Cluster, kind: str, actor: ServedNode) -> tuple[float, int]:
    """Signs bob in on the node after `actor`, hammers every node with his cookie, revokes on
    `actor`: a 200 to a check sent more than a second after the revocation answered is a
    break (`PromiseBroken`). Returns how late the last 200 was sent (s after the revocation)
    and how many refusals came after the second."""
    loop = asyncio.get_running_loop()
    others = [n for n in cluster.nodes if n is not actor]
    cookie = await sign_in(others[0], "bob", cluster.password)
    path = "/library/shelf" if kind == "group removal" else "/browse/X-1"
    refusal = 403 if kind == "group removal" else 401
    async with Hammer(cluster.nodes, f"twofa_session={cookie}", path) as hammer:

        def let_in_everywhere() -> bool:
            return len([a for a in hammer.answers if a.status == 200]) >= 3 * len(cluster.nodes)

        await until(let_in_everywhere, 5.0)
        await asyncio.sleep(0.1)
        before = len([a for a in hammer.answers if a.status == 200])
        await REVOCATIONS[kind](cluster, actor, cookie)
        done = loop.time()
        await asyncio.sleep(PROMISE_S + 0.3)
    assert before > 0, f"{kind}: the hammer never saw bob let in before"
    late = hammer.allowed_sent_after(done + PROMISE_S)
    if late:
        raise PromiseBroken(
            f"{kind}: {len(late)} answers of 200 to checks sent more than {PROMISE_S} s after "
            f"the revocation answered (the last sent {late[-1].sent - done:.2f} s after)"
        )
    after = hammer.sent_after(done + PROMISE_S)
    assert len(after) >= 10, f"{kind}: too few checks after the second to judge"
    assert {a.status for a in after} == {refusal}, (kind, {a.status for a in after})
    allowed = [a.sent - done for a in hammer.answers if a.status == 200 and a.sent > done]
    if kind in RESTORE:
        await RESTORE[kind](cluster, actor)
    return max(allowed, default=0.0), len(after)

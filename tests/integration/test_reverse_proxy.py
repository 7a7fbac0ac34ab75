"""The built-in reverse proxy (`twofa serve --upstream`): the access check in front of the
app, identity headers in, forged ones out, bodies streamed both ways, cookies kept, the app
down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users
from tests.support.protected_app import LoopbackTransport, protected_app
from tests.support.servers import free_port, serve_in_thread
from twofa.config import load_settings
from twofa.web.app import create_app
from twofa.web.reverse_proxy import ReverseProxy

AUTH, APP = "auth.example.test", "app.example.test"


@dataclass
class Site:
    browser: httpx.AsyncClient
    app_url: str
    auth_url: str


async def site_on(
    tmp_path: Path, simulator: RunningSimulator, upstream: str | None = None
) -> AsyncIterator[Site]:
    port = free_port()
    async with sqlite_database(tmp_path) as url:
        settings = load_settings(
            environ={},
            mode="dev",
            secret_key=SECRET,
            database_url=url,
            public_url=f"http://{AUTH}:{port}",
            access={
                "domains": [APP],
                "cookie_domain": "example.test",
                "rules": [
                    {"domain": APP, "resources": ["/public/*"], "policy": "bypass"},
                    {"domain": APP, "policy": "one_factor"},
                ],
            },
        )
        await seed_users(settings)
        with serve_in_thread(protected_app()) as app_url:
            proxy = ReverseProxy(create_app(settings), upstream or app_url)
            with serve_in_thread(proxy, port=port):
                async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=30) as browser:
                    yield Site(browser, f"http://{APP}:{port}", f"http://{AUTH}:{port}")


@pytest.fixture
async def site(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Site]:
    async for running in site_on(tmp_path, simulator):
        yield running


async def sign_in_bob(site: Site, location: str) -> str:
    page = await site.browser.get(location)
    answer = await site.browser.post(
        f"{site.auth_url}/login",
        data={"username": "bob", "password": PASSWORDS["bob"], "csrf_token": csrf_from(page.text)},
    )
    assert answer.status_code == 303
    return str(answer.headers["location"])


async def test_a_protected_request_goes_through_the_portal_then_to_the_app(site: Site) -> None:
    first = await site.browser.get(f"{site.app_url}/dashboard?tab=2")
    assert first.status_code == 302
    assert first.headers["location"].startswith(f"{site.auth_url}/login?next=")

    back_to = await sign_in_bob(site, first.headers["location"])
    assert back_to == f"{site.app_url}/dashboard?tab=2"
    app = await site.browser.get(back_to, headers={"Remote-User": "admin"})
    assert app.status_code == 200
    assert app.json()["remote-user"] == "bob"
    assert app.json()["remote-name"] == "Bob Builder"
    assert app.headers["x-query"] == "tab=2"


@pytest.mark.parametrize("path", ["/dashboard", "/public/logo.png"])  # signed in, bypass
async def test_aliases_of_the_identity_headers_never_reach_the_app(site: Site, path: str) -> None:
    first = await site.browser.get(f"{site.app_url}/dashboard")
    await sign_in_bob(site, first.headers["location"])
    smuggled = {"Remote_User": "admin", "Remote.User": "admin", "Remote~Groups": "admins"}

    app = await site.browser.get(f"{site.app_url}{path}", headers=smuggled)

    assert app.status_code == 200, app.text
    assert app.json()["aliases"] == []


async def test_the_portal_itself_is_served_on_its_own_host(site: Site) -> None:
    page = await site.browser.get(f"{site.auth_url}/login")
    assert page.status_code == 200
    assert "Sign in" in page.text


async def test_bypass_paths_reach_the_app_without_identity(site: Site) -> None:
    answer = await site.browser.get(
        f"{site.app_url}/public/logo.png", headers={"Remote-User": "admin"}
    )
    assert answer.status_code == 200
    assert answer.json()["remote-user"] is None


async def test_bodies_stream_both_ways_and_cookies_survive(site: Site) -> None:
    first = await site.browser.get(f"{site.app_url}/x")
    await sign_in_bob(site, first.headers["location"])

    upload = await site.browser.post(f"{site.app_url}/upload", content=b"y" * 5_000_000)
    assert upload.headers["x-body-bytes"] == "5000000"
    download = await site.browser.get(f"{site.app_url}/download?bytes=4194304")
    assert len(download.content) == 4_194_304
    cookies = await site.browser.get(f"{site.app_url}/cookies")
    assert len(cookies.headers.get_list("set-cookie")) == 2


async def test_an_unreachable_app_is_a_502(tmp_path: Path, simulator: RunningSimulator) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async for site in site_on(tmp_path, simulator, upstream=dead):
        first = await site.browser.get(f"{site.app_url}/x")
        await sign_in_bob(site, first.headers["location"])
        answer = await site.browser.get(f"{site.app_url}/x")
        assert answer.status_code == 502
        assert "not reachable" in answer.text


async def test_the_proxys_own_answers_carry_the_hardening_headers(site: Site) -> None:
    """The redirect to the portal, a refusal and a bad path are the gateway's pages on the
    app's host: framed or re-based like any other page, unless told not to be."""
    answers = [
        await site.browser.get(f"{site.app_url}/dashboard"),  # 302 to the portal
        await site.browser.get(f"{site.app_url}/public/%2e%2e%2fdashboard"),  # 400
    ]
    assert [answer.status_code for answer in answers] == [302, 400]
    for answer in answers:
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    app = await site.browser.get(f"{site.app_url}/public/page")
    assert "content-security-policy" not in app.headers  # the app's own answer is the app's

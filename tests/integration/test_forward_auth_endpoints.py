"""The forward-auth endpoints over real HTTP, called the way nginx, Traefik and Caddy call
them: what each session level gets under each policy, the headers, the redirects, forged or
malformed forwarding headers, untrusted callers, and revocation within a second."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.authenticator_totp import code_at, secret_from_page
from tests.support.clocks import SkippableClock
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users, sign_in
from tests.support.servers import free_port, serve_in_thread
from tests.support.totp_flow import challenge_from
from tests.support.two_factor import allow_methods
from twofa.config import load_settings
from twofa.web.app import create_app

APP = "app.example.test"


def settings_for(url: str, port: int, **access: Any) -> Any:
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=url,
        public_url=f"http://127.0.0.1:{port}",
        access={
            "domains": [APP],
            "rules": [
                {"domain": APP, "resources": ["/open/*"], "policy": "bypass"},
                {"domain": APP, "resources": ["/wiki/*"], "policy": "one_factor"},
                {"domain": APP, "resources": ["/closed/*"], "policy": "deny"},
                {"domain": APP, "policy": "two_factor"},
            ],
            **access,
        },
    )


@dataclass
class Gateway:
    client: httpx.AsyncClient
    base_url: str
    settings: Any
    clock: SkippableClock

    async def nginx(self, path: str, **headers: str) -> httpx.Response:
        return await self.client.get(
            "/authz/nginx", headers={"X-Original-URL": f"https://{APP}{path}", **headers}
        )

    async def traefik(self, path: str, **headers: str) -> httpx.Response:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": APP, "X-Forwarded-Uri": path}
        return await self.client.get("/authz/forward", headers={**forwarded, **headers})


async def gateway_on(tmp_path: Path, **access: Any) -> AsyncIterator[Gateway]:
    port = free_port()
    async with sqlite_database(tmp_path) as url:
        settings = settings_for(url, port, **access)
        await seed_users(settings)
        clock = SkippableClock()
        with serve_in_thread(create_app(settings, clock=clock), port=port) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                yield Gateway(client, base_url, settings, clock)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async for running in gateway_on(tmp_path):
        yield running


async def test_anonymous_requests_per_policy(gateway: Gateway) -> None:
    assert (await gateway.nginx("/open/logo.png")).status_code == 200
    assert (await gateway.nginx("/wiki/Home")).status_code == 401
    assert (await gateway.nginx("/browse/X-1")).status_code == 401
    assert (await gateway.nginx("/closed/x")).status_code == 403


async def test_anonymous_allow_sends_empty_identity_headers(gateway: Gateway) -> None:
    answer = await gateway.nginx("/open/logo.png")
    assert answer.headers["remote-user"] == ""
    assert answer.headers["remote-groups"] == ""


async def test_traefik_and_caddy_get_a_redirect_to_the_portal_with_the_url(
    gateway: Gateway,
) -> None:
    answer = await gateway.traefik("/browse/X-1?view=a&b=c")
    assert answer.status_code == 302
    location = urllib.parse.urlsplit(answer.headers["location"])
    assert location.path == "/login"
    assert urllib.parse.parse_qs(location.query)["next"] == [f"https://{APP}/browse/X-1?view=a&b=c"]


async def test_a_password_only_session_passes_one_factor_but_not_two_factor(
    gateway: Gateway,
) -> None:
    """bob needs no second factor: signed in on his password, he reaches one-factor
    resources; a two-factor resource asks for a second factor, never a silent 200."""
    assert (await sign_in(gateway.client, "bob")).status_code == 303
    wiki = await gateway.nginx("/wiki/Home")
    assert wiki.status_code == 200
    assert wiki.headers["remote-user"] == "bob"
    assert wiki.headers["remote-name"] == "Bob Builder"
    assert (await gateway.nginx("/browse/X-1")).status_code == 401


async def test_a_session_waiting_for_its_second_factor_gets_nothing(gateway: Gateway) -> None:
    answer = await sign_in(gateway.client, "alice")
    assert answer.headers["location"] == "/2fa"  # password accepted, second factor pending
    assert (await gateway.nginx("/wiki/Home")).status_code == 401
    assert (await gateway.nginx("/browse/X-1")).status_code == 401


async def test_sign_out_is_seen_within_a_second(gateway: Gateway) -> None:
    await sign_in(gateway.client, "bob")
    assert (await gateway.nginx("/wiki/Home")).status_code == 200
    home = await gateway.client.get("/")
    await gateway.client.post("/logout", data={"csrf_token": csrf_from(home.text)})
    cookie = {"Cookie": ""}  # the browser lost its cookie; what matters is the old one
    del cookie
    deadline = asyncio.get_running_loop().time() + 2.5
    status = 200
    while asyncio.get_running_loop().time() < deadline and status == 200:
        status = (await gateway.nginx("/wiki/Home")).status_code
        await asyncio.sleep(0.05)
    assert status == 401


async def test_a_signed_out_session_cookie_stops_working_at_once(gateway: Gateway) -> None:
    """No waiting for a cache: the node that signed it out forgets it in the same breath."""
    await sign_in(gateway.client, "bob")
    token = gateway.client.cookies["twofa_session"]
    assert (await gateway.nginx("/wiki/Home")).status_code == 200
    home = await gateway.client.get("/")
    await gateway.client.post("/logout", data={"csrf_token": csrf_from(home.text)})
    gateway.client.cookies.set("twofa_session", token)  # a copy kept by an attacker
    assert (await gateway.nginx("/wiki/Home")).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Original-URL": "javascript:alert(1)"},
        {"X-Original-URL": "https://user:pw@app.example.test/"},
        {"X-Original-URL": "//app.example.test/"},
    ],
)
async def test_malformed_original_urls_are_refused(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    answer = await gateway.client.get("/authz/nginx", headers=headers)
    assert answer.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/open/../closed/x",  # an application that does not resolve `..` reads it otherwise
        "/open/..%2Fclosed/x",
        "/open/..;/closed/x",
        "/open/x%00",
        "/open/x#/../../closed/x",  # urlsplit would cut it at `#`; the app may not
        "/op\ten/x",  # urlsplit would drop the tab, the app would not
    ],
)
async def test_a_path_that_cannot_be_checked_safely_is_a_400_for_every_proxy(
    gateway: Gateway, path: str
) -> None:
    nginx = await gateway.nginx(path)
    traefik_caddy = await gateway.traefik(path)
    assert (nginx.status_code, traefik_caddy.status_code) == (400, 400)
    assert "path refused" in nginx.text
    assert "remote-user" not in nginx.headers


@pytest.mark.parametrize(
    "host", ["app.example.test/evil", "evil.test", "app.example.test@evil.test", ""]
)
async def test_forged_forwarded_hosts_are_refused(gateway: Gateway, host: str) -> None:
    answer = await gateway.client.get(
        "/authz/forward",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": host, "X-Forwarded-Uri": "/"},
    )
    assert answer.status_code == 403


async def test_a_caller_that_is_not_a_trusted_proxy_is_refused(tmp_path: Path) -> None:
    async for gateway in gateway_on(tmp_path, trusted_proxies=["10.9.9.9/32"]):
        await sign_in(gateway.client, "bob")
        answer = await gateway.nginx("/wiki/Home")
        assert answer.status_code == 403
        assert "trusted proxy" in answer.text
        assert "remote-user" not in answer.headers


async def test_the_network_of_a_rule_is_the_forwarded_client_address(tmp_path: Path) -> None:
    rules = [
        {"domain": APP, "networks": ["10.0.0.0/8"], "policy": "bypass"},
        {"domain": APP, "policy": "deny"},
    ]
    async for gateway in gateway_on(tmp_path, rules=rules):
        inside = await gateway.nginx("/x", **{"X-Forwarded-For": "10.1.2.3"})
        outside = await gateway.nginx("/x", **{"X-Forwarded-For": "198.51.100.7"})
        spoofed = await gateway.nginx("/x", **{"X-Forwarded-For": "10.1.2.3, 198.51.100.7"})
        assert (inside.status_code, outside.status_code, spoofed.status_code) == (200, 403, 403)


async def test_bob_elevates_to_a_second_factor_for_a_two_factor_app(gateway: Gateway) -> None:
    """Signed in without 2FA, bob follows the portal link for a two-factor app: he is asked
    to add a second factor rather than sent round in circles."""
    await sign_in(gateway.client, "bob")
    answer = await gateway.client.get("/login", params={"next": f"https://{APP}/browse/X-1"})
    assert answer.headers["location"] == "/2fa/elevate"
    elevate = await gateway.client.get("/2fa/elevate")
    assert elevate.headers["location"] == "/my-2fa?need=second_factor"
    page = await gateway.client.get("/my-2fa?need=second_factor")
    assert "requires two-factor authentication" in page.text
    assert PASSWORDS["bob"]  # bob's own password was all he needed so far


async def test_a_trusted_network_skips_a_set_up_second_factor_but_not_enrolment(
    tmp_path: Path,
) -> None:
    """alice (2FA via engineering) from the office network: the first time she must still set
    up her second factor; once she has one, the office network lets her in on the password."""
    async for gateway in gateway_on(tmp_path, trusted_networks=["127.0.0.0/8"]):
        await allow_methods(gateway.settings, ("totp",), "totp")
        first = await sign_in(gateway.client, "alice")
        assert first.headers["location"] == "/2fa"  # nothing set up yet: enrol first
        page = await gateway.client.get("/2fa/m/totp/enrol")
        secret = secret_from_page(page.text)
        done = await gateway.client.post(
            "/2fa/m/totp/enrol",
            data={
                "csrf_token": csrf_from(page.text),
                "challenge": challenge_from(page.text),
                "code": code_at(secret),
            },
        )
        assert done.status_code == 303
        home = await gateway.client.get("/")
        await gateway.client.post("/logout", data={"csrf_token": csrf_from(home.text)})

        again = await sign_in(gateway.client, "alice")
        assert again.headers["location"] == "/"  # trusted network, factor set up: no 2FA
        # ...but the session did not pass a second factor: two-factor apps still ask for one
        assert (await gateway.nginx("/browse/X-1")).status_code == 401
        assert (await gateway.nginx("/wiki/Home")).status_code == 200

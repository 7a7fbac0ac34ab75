"""twofa as the SAML 2.0 identity provider of a real, widely deployed service provider: Apache
httpd with mod_auth_mellon (Debian's). Mellon signs its AuthnRequests, checks the response's
and the assertion's signatures, audience, recipient and times itself, and refuses an assertion
it has seen before; the browser is headless Chromium. Alice signs in with her password and Duo
Push, the page shows her attributes, and mellon's logout goes through twofa's single logout."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, Request, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import RunningSimulator
from tests.e2e.test_oidc_apache_e2e import context, on_twofa_sign_in, sign_in_with_duo_push
from tests.support.apache import (
    ATTRIBUTES_PATH,
    SIGNED_OUT_PATH,
    MellonServiceProvider,
    RunningApache,
    mellon_service_provider,
    running_mellon_apache,
)
from tests.support.databases import sqlite_database
from tests.support.gateway import gateway_settings, seed_users
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings
from twofa.services.idp.saml.registry import NewServiceProvider
from twofa.services.idp.saml.wiring import build_saml
from twofa.services.runtime import Gateway
from twofa.web.app import create_app

AUTH, APP = "auth.example.test", "app1.example.test"
__all__ = ["context"]
# Posts a SAMLResponse to an ACS as an IdP's page does (from the page the browser is on).
REPOST = """([acs, value]) => {
    const form = document.createElement("form");
    form.method = "post";
    form.action = acs;
    const field = document.createElement("input");
    field.name = "SAMLResponse";
    field.value = value;
    form.appendChild(field);
    document.body.appendChild(form);
    form.submit();
}"""  # the browser context fixture, shared with the OIDC test


@dataclass(frozen=True)
class Deployment:
    apache: RunningApache
    auth_url: str
    sp: MellonServiceProvider

    def attributes_url(self) -> str:
        return self.apache.url(APP, ATTRIBUTES_PATH)


async def register_service_provider(settings: Settings, sp: MellonServiceProvider) -> None:
    gateway = await Gateway.start(settings)
    try:
        saml = build_saml(gateway.db, gateway.clock, settings.secret_keys, settings.public_url)
        await saml.providers.add(NewServiceProvider("Team wiki", sp.metadata()), actor="test")
    finally:
        await gateway.close()


@pytest.fixture
async def deployment(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Deployment]:
    twofa_port, apache_port = free_port(), free_port()
    auth_url = f"http://{AUTH}:{twofa_port}"
    async with sqlite_database(tmp_path) as url:
        settings = gateway_settings(url, simulator, twofa_port, "demo", public_url=auth_url)
        await seed_users(settings)  # alice, in group engineering, which has 2FA switched on
        sp = mellon_service_provider(APP, apache_port)
        await register_service_provider(settings, sp)
        with serve_in_thread(create_app(settings), port=twofa_port) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                idp_metadata = (await http.get("/saml/metadata")).text
            with running_mellon_apache(apache_port, [sp], idp_metadata) as apache:
                yield Deployment(apache, auth_url, sp)


async def attributes_shown(page: Page, deployment: Deployment) -> dict[str, str]:
    url = deployment.attributes_url()
    try:
        await page.wait_for_url(url)
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"expected {url}, the browser is on {page.url}:\n{await page.content()}\n"
            f"Apache's error log:\n{deployment.apache.log_tail()}"
        ) from None
    lines = (await page.locator("body").inner_text()).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


async def test_mellon_signs_alice_in_with_duo_push_and_logout_ends_twofas_session(
    context: BrowserContext, deployment: Deployment, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")  # her phone is already in Duo
    page, phone = await context.new_page(), await context.new_page()
    posted: list[Request] = []
    page.on("request", lambda r: posted.append(r) if r.url == deployment.sp.acs_url else None)

    await page.goto(deployment.attributes_url())
    await on_twofa_sign_in(page, deployment)
    await sign_in_with_duo_push(page, phone, simulator)
    shown = await attributes_shown(page, deployment)
    assert shown["remote_user"] == "alice"
    assert shown["username"] == "alice"
    assert shown["display_name"] == "Alice Liddell"
    assert shown["groups"] == "engineering"
    assert shown["IDP"] == f"{deployment.auth_url}/saml/metadata"
    assert len(posted) == 1

    # The response mellon accepted, posted again by the browser: mellon has seen its
    # assertion and refuses it.
    async with page.expect_response(deployment.sp.acs_url) as replay:
        await page.evaluate(REPOST, [deployment.sp.acs_url, form_field(posted[0], "SAMLResponse")])
    refused = await replay.value
    assert refused.status >= 400, await refused.text()
    await page.wait_for_url(deployment.sp.acs_url)
    await page.wait_for_load_state()
    assert "has already been used" in deployment.apache.log_tail()

    signed_out = deployment.apache.url(APP, SIGNED_OUT_PATH)
    await page.goto(deployment.sp.logout_url(signed_out))
    try:
        await page.wait_for_url(signed_out)
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"not signed out, on {page.url}:\n{await page.content()}\n"
            f"{deployment.apache.log_tail()}"
        ) from None
    await expect(page.locator("body")).to_contain_text(f"signed out of {APP}")

    await page.goto(deployment.attributes_url())  # mellon's session and twofa's are gone
    await on_twofa_sign_in(page, deployment)


def form_field(request: Request, name: str) -> str:
    fields = dict(urllib.parse.parse_qsl(request.post_data or ""))
    return fields[name]

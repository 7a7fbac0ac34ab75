"""The product as deployed, in Chromium: an application behind real nginx (the shipped
configuration), a user who exists only in the Atlassian directory (the Crowd REST stand-in),
in a group the admin switched 2FA on for. The browser asks for the app, lands on the portal,
signs in with the directory password, sets up Duo Push, approves on the phone page and is back
at the app, which receives who signed in. (Chromium resolves *.example.test to 127.0.0.1: see
the launch flags in conftest.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from tests.conftest import RunningSimulator
from tests.e2e.test_duo_push_e2e import answer_on_phone
from tests.support.crowd_standin import CrowdStandIn
from tests.support.databases import sqlite_database
from tests.support.gateway import SECRET, seed_users
from tests.support.nginx import running_nginx
from tests.support.protected_app import protected_app
from tests.support.servers import free_port, serve_in_thread
from twofa.config import load_settings
from twofa.web.app import create_app

AUTH, APP = "auth.example.test", "jira.example.test"


@dataclass(frozen=True)
class Deployment:
    app_url: str
    auth_url: str


@pytest.fixture
async def deployment(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Deployment]:
    crowd = CrowdStandIn(application_name="twofa", application_password="crowd-app-secret")
    crowd.add_group("jira-developers", member_of=("engineering",))
    crowd.add_user(
        "carol", "carol-jira-pw", display_name="Carol Danvers", groups=("jira-developers",)
    )
    port = free_port()
    async with sqlite_database(tmp_path) as url:
        with serve_in_thread(crowd.app) as crowd_url, serve_in_thread(protected_app()) as app_url:
            settings = load_settings(
                environ={},
                mode="demo",
                secret_key=SECRET,
                database_url=url,
                public_url=f"http://{AUTH}:{port}",
                duo={
                    "ikey": simulator.ikey,
                    "skey": simulator.skey,
                    "api_hostname": simulator.base_url,
                    "application_name": "Jira",
                },
                directories=["local", "crowd"],
                crowd={
                    "url": crowd_url,
                    "application_name": "twofa",
                    "application_password": "crowd-app-secret",
                },
                access={
                    "domains": [APP],
                    "cookie_domain": "example.test",
                    "rules": [{"domain": APP, "policy": "two_factor"}],
                },
            )
            await seed_users(settings)  # group engineering has 2FA switched on
            with (
                serve_in_thread(create_app(settings)) as twofa_url,
                running_nginx(
                    tmp_path / "nginx",
                    port,
                    twofa_url.removeprefix("http://"),
                    app_url.removeprefix("http://"),
                    AUTH,
                    APP,
                ),
            ):
                yield Deployment(f"http://{APP}:{port}", f"http://{AUTH}:{port}")


async def test_a_directory_user_reaches_the_protected_app_with_duo_push(
    context: BrowserContext, deployment: Deployment, simulator: RunningSimulator
) -> None:
    simulator.add_user("carol")  # her phone is already in Duo
    page, phone = await context.new_page(), await context.new_page()

    await page.goto(f"{deployment.app_url}/browse/JIRA-1")
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.url.startswith(f"{deployment.auth_url}/login")
    await page.get_by_label("Username").fill("carol")
    await page.get_by_label("Password").fill("carol-jira-pw")
    await page.get_by_role("button", name="Sign in").click()

    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Send Me Push Notification").click()
    await answer_on_phone(phone, simulator, "Approve", username="carol", application="Jira")

    await page.wait_for_url(f"{deployment.app_url}/browse/JIRA-1")
    seen_by_app = json.loads(await page.locator("body").inner_text())
    assert seen_by_app["remote-user"] == "carol"
    assert seen_by_app["remote-name"] == "Carol Danvers"
    assert set(seen_by_app["remote-groups"].split(",")) == {"engineering", "jira-developers"}

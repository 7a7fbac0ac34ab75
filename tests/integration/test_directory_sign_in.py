"""Users from an external directory (the Crowd REST stand-in) signing in through the
gateway: provisioned at first sign-in, groups kept in step with the directory (and the
admin's 2FA switch on a group of the same name applied), the seed's Duo Push flow, a
directory that is down, and names that belong to another directory or to a local account."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_gateway_flow import follow, start_push
from tests.support.crowd_standin import CrowdStandIn
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, SECRET, seed_users, sign_in
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings, load_settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users
from twofa.web.app import create_app

APPLICATION = ("twofa", "crowd-application-secret")


@dataclass
class Site:
    browser: httpx.AsyncClient
    crowd: CrowdStandIn
    settings: Settings

    async def groups_of(self, username: str) -> list[str]:
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                user = await Users(db).by_name(username)
                assert user is not None, f"{username} was not provisioned"
                return sorted(await Users(db).group_names(user.id))
        finally:
            await gateway.close()


@pytest.fixture
def crowd() -> Iterator[tuple[CrowdStandIn, str]]:
    standin = CrowdStandIn(application_name=APPLICATION[0], application_password=APPLICATION[1])
    with serve_in_thread(standin.app) as url:
        yield standin, url


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, crowd: tuple[CrowdStandIn, str]
) -> AsyncIterator[Site]:
    standin, crowd_url = crowd
    port = free_port()
    async with sqlite_database(tmp_path) as url:
        settings = load_settings(
            environ={},
            mode="dev",
            secret_key=SECRET,
            database_url=url,
            public_url=f"http://127.0.0.1:{port}",
            duo={
                "ikey": simulator.ikey,
                "skey": simulator.skey,
                "api_hostname": simulator.base_url,
            },
            directories=["local", "crowd"],
            crowd={
                "url": crowd_url,
                "application_name": APPLICATION[0],
                "application_password": APPLICATION[1],
            },
        )
        await seed_users(settings)  # local alice (2FA via engineering) and bob
        with serve_in_thread(create_app(settings), port=port) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as browser:
                yield Site(browser, standin, settings)


async def test_a_directory_user_is_provisioned_and_signed_in(site: Site) -> None:
    site.crowd.add_user("Carol", "carol-crowd-pw", display_name="Carol Danvers", groups=("wiki",))
    answer = await sign_in(site.browser, "carol", "carol-crowd-pw")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    assert "Carol Danvers" in (await site.browser.get("/")).text
    assert await site.groups_of("Carol") == ["wiki"]


async def test_the_seed_flow_for_a_directory_user_in_a_2fa_group(
    site: Site, simulator: RunningSimulator
) -> None:
    """The admin switched 2FA on for "engineering"; Crowd says Carol is in it (nested)."""
    site.crowd.add_group("backend", member_of=("engineering",))
    site.crowd.add_user("carol", "carol-crowd-pw", groups=("backend",))
    simulator.add_user("carol")

    assert (await sign_in(site.browser, "carol", "carol-crowd-pw")).headers["location"] == "/2fa"
    challenge = await start_push(site.browser, "/2fa/duo/setup")
    [pending] = simulator.pending("carol")
    simulator.settle(str(pending["txid"]), "approve")
    assert (await follow(site.browser, challenge))["state"] == "allow"
    assert await site.groups_of("carol") == ["backend", "engineering"]


async def test_groups_follow_the_directory_at_each_sign_in(site: Site) -> None:
    site.crowd.add_user("carol", "carol-crowd-pw", groups=("engineering",))
    assert (await sign_in(site.browser, "carol", "carol-crowd-pw")).headers["location"] == "/2fa"
    site.crowd.add_user("carol", "carol-crowd-pw", groups=("wiki",))  # moved teams

    async with httpx.AsyncClient(base_url=str(site.browser.base_url), timeout=30) as fresh:
        answer = await sign_in(fresh, "carol", "carol-crowd-pw")
    assert answer.headers["location"] == "/"  # no longer in the 2FA group
    assert await site.groups_of("carol") == ["wiki"]


async def test_a_wrong_directory_password_is_refused_like_any_other(site: Site) -> None:
    site.crowd.add_user("carol", "carol-crowd-pw")
    answer = await sign_in(site.browser, "carol", "wrong")
    assert answer.status_code == 401
    assert "Invalid username or password." in answer.text


async def test_a_directory_that_is_down_says_so_and_local_users_still_sign_in(
    site: Site,
) -> None:
    site.crowd.add_user("carol", "carol-crowd-pw")
    site.crowd.fail_with(500)
    answer = await sign_in(site.browser, "carol", "carol-crowd-pw")
    assert answer.status_code == 503
    assert "user directory is not answering" in answer.text

    async with httpx.AsyncClient(base_url=str(site.browser.base_url), timeout=30) as bob:
        assert (await sign_in(bob, "bob")).headers["location"] == "/"


async def test_a_directory_never_signs_in_a_local_account(site: Site) -> None:
    """Crowd has its own "bob" with another password: twofa's local bob is not Crowd's."""
    site.crowd.add_user("bob", "crowd-bob-pw")
    assert (await sign_in(site.browser, "bob", "crowd-bob-pw")).status_code == 401
    assert site.crowd.received == []  # the local account's password is checked locally only
    assert (await sign_in(site.browser, "bob", PASSWORDS["bob"])).status_code == 303

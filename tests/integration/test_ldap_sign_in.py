"""Users from LDAP (a real OpenLDAP started by the tests) signing in through the gateway:
the seed's Duo Push flow for a user in a group with 2FA switched on, groups (nested ones
included) synced, a wrong password, and a directory that is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_gateway_flow import follow, start_push
from tests.support.databases import sqlite_database
from tests.support.gateway import SECRET, sign_in
from tests.support.servers import free_port, serve_in_thread
from tests.support.slapd import (
    BASE_DN,
    PASSWORDS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    RunningSlapd,
    running_slapd,
)
from twofa.config import Settings, load_settings
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users
from twofa.web.app import create_app


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


async def groups_of(settings: Settings, username: str) -> list[str]:
    gateway = await Gateway.start(settings)
    try:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name(username)
            assert user is not None
            return sorted(await Users(db).group_names(user.id))
    finally:
        await gateway.close()


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, slapd: RunningSlapd
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
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
            directories=["local", "ldap"],
            ldap={
                "url": slapd.url,
                "bind_dn": SERVICE_DN,
                "bind_password": SERVICE_PASSWORD,
                "base_dn": BASE_DN,
            },
        )
        gateway = await Gateway.start(settings)
        try:  # the admin switched 2FA on for the LDAP group "engineering" beforehand
            await gateway.accounts.add_group("engineering")
            await gateway.accounts.set_group_policy("engineering", True)
        finally:
            await gateway.close()
        with serve_in_thread(create_app(settings), port=port) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                yield client, settings


async def test_an_ldap_user_goes_through_the_seed_flow(
    site: tuple[httpx.AsyncClient, Settings], simulator: RunningSimulator
) -> None:
    client, settings = site
    simulator.add_user("alice")
    answer = await sign_in(client, "ALICE", PASSWORDS["alice"])
    assert answer.headers["location"] == "/2fa"  # engineering has 2FA on
    challenge = await start_push(client, "/2fa/duo/setup")
    [pending] = simulator.pending("alice")  # the directory's spelling, not what was typed
    simulator.settle(str(pending["txid"]), "approve")
    assert (await follow(client, challenge))["state"] == "allow"
    assert "Alice Liddell" in (await client.get("/")).text
    assert await groups_of(settings, "alice") == ["admins", "engineering", "staff"]


async def test_an_ldap_user_outside_2fa_groups_signs_in_with_the_password(
    site: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = site
    answer = await sign_in(client, "bob", PASSWORDS["bob"])
    assert answer.headers["location"] == "/"


async def test_a_wrong_ldap_password_is_refused(site: tuple[httpx.AsyncClient, Settings]) -> None:
    client, _ = site
    answer = await sign_in(client, "alice", "not-her-password")
    assert answer.status_code == 401


async def test_an_injection_attempt_signs_nobody_in(
    site: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, _ = site
    answer = await sign_in(client, "*)(uid=*", PASSWORDS["alice"])
    assert answer.status_code == 401


async def test_ldap_down_says_so(
    tmp_path: Path, simulator: RunningSimulator, slapd: RunningSlapd
) -> None:
    dead = free_port()  # nothing listens there
    async with sqlite_database(tmp_path) as url:
        settings = load_settings(
            environ={},
            mode="dev",
            secret_key=SECRET,
            database_url=url,
            directories=["local", "ldap"],
            ldap={
                "url": f"ldap://127.0.0.1:{dead}",
                "bind_dn": SERVICE_DN,
                "bind_password": SERVICE_PASSWORD,
                "base_dn": BASE_DN,
                "timeout_s": 2,
            },
        )
        with serve_in_thread(create_app(settings)) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                answer = await sign_in(client, "alice", PASSWORDS["alice"])
    assert answer.status_code == 503
    assert "user directory is not answering" in answer.text

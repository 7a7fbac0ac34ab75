"""Directory groups refreshed during a long session, over real HTTP against a real OpenLDAP
(slapd) and the Crowd stand-in: the forward-auth check notices when the groups are older
than `directory_groups_cache_s` (a frozen clock moves past it), refreshes them in the
background and uses the new ones on the next load; a user deleted from the directory is
signed out; a directory that is down or stalled leaves the stored groups and the check
answering; a cache time of 0 keeps sign-in-only behaviour."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import ldap3
import pytest

from tests.support.crowd_standin import CrowdStandIn
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import SECRET, sign_in
from tests.support.servers import free_port, serve_in_thread
from tests.support.slapd import (
    BASE_DN,
    GROUPS,
    HOST,
    PEOPLE,
    ROOT_DN,
    ROOT_PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    RunningSlapd,
    running_slapd,
    ssha,
)
from twofa.clock import FrozenClock
from twofa.config import Settings, load_settings
from twofa.services.access.session_cache import CHECK_SECONDS
from twofa.services.runtime import Gateway
from twofa.storage.audit_log import AuditLog
from twofa.web.app import create_app

APP = "app.example.test"
CACHE_S = 300
PASSWORD = "erin-pass"
CROWD_APPLICATION = ("twofa", "crowd-application-secret")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd-refresh")) as server:
        yield server


@pytest.fixture
def crowd() -> Iterator[tuple[CrowdStandIn, str]]:
    standin = CrowdStandIn(
        application_name=CROWD_APPLICATION[0], application_password=CROWD_APPLICATION[1]
    )
    with serve_in_thread(standin.app) as url:
        try:
            yield standin, url
        finally:
            standin.reset_hooks()  # a stalled request must not hold the server's shutdown


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractAsyncContextManager[str]:
    return sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()


@dataclass
class Site:
    browser: httpx.AsyncClient
    settings: Settings
    clock: FrozenClock
    team: str  # the group the /team/ application requires

    async def team_page(self) -> int:
        return await self._nginx("/team/board")

    async def wiki_page(self) -> int:
        return await self._nginx("/wiki/Home")

    async def _nginx(self, path: str) -> int:
        answer = await self.browser.get(
            "/authz/nginx", headers={"X-Original-URL": f"https://{APP}{path}"}
        )
        return answer.status_code

    async def wait_for(self, page: str, status: int, seconds: float = 15) -> int:
        """Polls the check until it says `status`, a second of the frozen clock apart so each
        poll is a load (the check keeps a session for a second); the refresh runs meanwhile."""
        deadline = asyncio.get_running_loop().time() + seconds
        seen = await getattr(self, page)()
        while seen != status and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            self.past_the_session_cache()
            seen = await getattr(self, page)()
        return seen

    def past_the_session_cache(self) -> None:
        self.clock.advance(timedelta(seconds=CHECK_SECONDS + 0.2))

    async def directory_audit(self) -> list[tuple[str, dict[str, Any]]]:
        gateway = await Gateway.start(self.settings)
        try:
            async with gateway.db.begin() as db:
                rows = await AuditLog(db).recent(limit=1000)
        finally:
            await gateway.close()
        return [(row.outcome, row.detail) for row in reversed(rows) if row.kind == "directory"]


def site_settings(url: str, port: int, team: str, **directory: Any) -> Settings:
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=url,
        public_url=f"http://127.0.0.1:{port}",
        access={
            "domains": [APP],
            "default_policy": "deny",
            "rules": [
                {"domain": APP, "resources": ["/team/*"], "groups": [team], "policy": "one_factor"},
                {"domain": APP, "resources": ["/wiki/*"], "policy": "one_factor"},
            ],
        },
        **directory,
    )


async def serve_site(settings: Settings, port: int, team: str) -> AsyncIterator[Site]:
    clock = FrozenClock(datetime.now(UTC))
    with serve_in_thread(create_app(settings, clock=clock), port=port) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as browser:
            yield Site(browser, settings, clock, team)


# --- LDAP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdapPerson:
    """A person and a group of their own, added for one test so tests cannot disturb each
    other's view of the shared server."""

    uid: str
    team: str

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE}"

    @property
    def team_dn(self) -> str:
        return f"cn={self.team},{GROUPS}"


def as_root(slapd: RunningSlapd) -> ldap3.Connection:
    server = ldap3.Server(HOST, port=slapd.port, get_info=ldap3.NONE, connect_timeout=5)
    return ldap3.Connection(server, ROOT_DN, ROOT_PASSWORD, auto_bind=True, receive_timeout=10)


def add_person(slapd: RunningSlapd) -> LdapPerson:
    suffix = secrets.token_hex(4)
    person = LdapPerson(f"erin-{suffix}", f"team-{suffix}")
    with as_root(slapd) as connection:
        assert connection.add(
            person.dn,
            ["inetOrgPerson"],
            {
                "uid": person.uid,
                "cn": "Erin Hannon",
                "sn": "Hannon",
                "userPassword": ssha(PASSWORD),
            },
        ), connection.result
        assert connection.add(
            person.team_dn, ["groupOfNames"], {"cn": person.team, "member": [person.dn]}
        ), connection.result
    return person


def ldap_change(slapd: RunningSlapd, change: str, person: LdapPerson) -> None:
    with as_root(slapd) as connection:
        if change == "leave team":  # groupOfNames needs a member: the service account stays
            done = connection.modify(
                person.team_dn,
                {"member": [(ldap3.MODIFY_REPLACE, [SERVICE_DN])]},
            )
        else:
            done = connection.delete(person.dn)
        assert done, connection.result


@dataclass
class LdapSite:
    site: Site
    person: LdapPerson


@pytest.fixture
async def ldap_site(
    slapd: RunningSlapd, database: AbstractAsyncContextManager[str]
) -> AsyncIterator[LdapSite]:
    person = add_person(slapd)
    port = free_port()
    ldap = {
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "base_dn": BASE_DN,
    }
    async with database as url:
        settings = site_settings(url, port, person.team, directories=["local", "ldap"], ldap=ldap)
        async for site in serve_site(settings, port, person.team):
            assert (await sign_in(site.browser, person.uid, PASSWORD)).status_code == 303
            yield LdapSite(site, person)


async def test_a_user_removed_from_an_ldap_group_loses_the_app_once_the_cache_time_passes(
    ldap_site: LdapSite, slapd: RunningSlapd
) -> None:
    site = ldap_site.site
    assert await site.team_page() == 200
    ldap_change(slapd, "leave team", ldap_site.person)
    site.past_the_session_cache()  # inside the group cache
    assert await site.team_page() == 200

    site.clock.advance(timedelta(seconds=CACHE_S))
    assert await site.wait_for("team_page", 403) == 403
    assert await site.wiki_page() == 200  # still signed in, only the group is gone
    [(outcome, detail)] = await site.directory_audit()
    assert (outcome, detail["removed"]) == ("groups_refreshed", [site.team])


async def test_a_user_deleted_from_ldap_is_signed_out(
    ldap_site: LdapSite, slapd: RunningSlapd
) -> None:
    site = ldap_site.site
    assert await site.wiki_page() == 200
    ldap_change(slapd, "delete", ldap_site.person)
    site.clock.advance(timedelta(seconds=CACHE_S))
    assert await site.wait_for("wiki_page", 401) == 401
    [(outcome, detail)] = await site.directory_audit()
    assert (outcome, detail["sessions"]) == ("user_gone", "ended")


# --- Crowd ----------------------------------------------------------------------------------


async def crowd_site(
    crowd: tuple[CrowdStandIn, str], url: str, cache_s: int = CACHE_S
) -> AsyncIterator[Site]:
    standin, crowd_url = crowd
    standin.add_user("carol", "carol-crowd-pw", groups=("team",))
    port = free_port()
    settings = site_settings(
        url,
        port,
        "team",
        directories=["local", "crowd"],
        directory_groups_cache_s=cache_s,
        crowd={
            "url": crowd_url,
            "application_name": CROWD_APPLICATION[0],
            "application_password": CROWD_APPLICATION[1],
        },
    )
    async for site in serve_site(settings, port, "team"):
        assert (await sign_in(site.browser, "carol", "carol-crowd-pw")).status_code == 303
        standin.received.clear()
        yield site


def group_questions(standin: CrowdStandIn) -> int:
    return sum(1 for request in standin.received if request.path.endswith("/user/group/nested"))


async def team_page_until_asked(
    site: Site, standin: CrowdStandIn, count: int, seconds: float = 15
) -> set[int]:
    """Polls the /team/ check until Crowd has had `count` group questions; what it answered
    meanwhile."""
    deadline = asyncio.get_running_loop().time() + seconds
    answers = {await site.team_page()}
    while group_questions(standin) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        answers.add(await site.team_page())
    assert group_questions(standin) == count
    return answers


async def test_crowd_down_keeps_the_stored_groups_audits_once_and_retries_next_interval(
    crowd: tuple[CrowdStandIn, str], tmp_path: Path
) -> None:
    standin, _ = crowd
    async with sqlite_database(tmp_path) as url:
        async for site in crowd_site(crowd, url):
            standin.fail_with(503)
            standin.add_user("carol", "carol-crowd-pw", groups=("wiki",))
            for interval in (1, 2):
                site.clock.advance(timedelta(seconds=CACHE_S))
                # the stored groups still count
                assert await team_page_until_asked(site, standin, interval) == {200}
            site.past_the_session_cache()  # more loads inside the interval ask nothing more
            assert await site.team_page() == 200
            assert group_questions(standin) == 2
            [(outcome, detail)] = await site.directory_audit()
            assert (outcome, detail["directory"]) == ("groups_refresh_unavailable", "crowd")

            standin.reset_hooks()  # back: the next interval applies its answer
            site.clock.advance(timedelta(seconds=CACHE_S))
            assert await site.wait_for("team_page", 403) == 403


async def test_a_stalled_crowd_does_not_hold_up_the_check(
    crowd: tuple[CrowdStandIn, str], tmp_path: Path
) -> None:
    standin, _ = crowd
    async with sqlite_database(tmp_path) as url:
        async for site in crowd_site(crowd, url):
            standin.slow_down(60)
            site.clock.advance(timedelta(seconds=CACHE_S))
            assert await team_page_until_asked(site, standin, 1) == {200}  # asked, stalled
            site.past_the_session_cache()
            # The browser's client gives up after 5 s; the check answers from the stored groups.
            assert await site.team_page() == 200
            assert group_questions(standin) == 1  # one question per user at a time


async def test_a_cache_time_of_zero_refreshes_groups_only_at_sign_in(
    crowd: tuple[CrowdStandIn, str], tmp_path: Path
) -> None:
    standin, _ = crowd
    async with sqlite_database(tmp_path) as url:
        async for site in crowd_site(crowd, url, cache_s=0):
            standin.add_user("carol", "carol-crowd-pw", groups=("wiki",))
            site.clock.advance(timedelta(minutes=25))  # short of the 30-minute idle limit
            assert await site.team_page() == 200
            assert group_questions(standin) == 0

            site.browser.cookies.clear()
            assert (await sign_in(site.browser, "carol", "carol-crowd-pw")).status_code == 303
            assert await site.team_page() == 403

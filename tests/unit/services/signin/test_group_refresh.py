"""Directory groups refreshed during a session: in the background of the forward-auth check
once they are older than the cache time, one question per user at a time, a user the
directory no longer knows signed out, a directory that is down leaving the stored groups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tests.unit.services.conftest import BROWSER, audit_rows
from twofa.clock import FrozenClock
from twofa.config import AccessSettings, Mode, Settings
from twofa.directories.base import DirectoryUnavailable, DirectoryUser
from twofa.directories.local import LocalDirectory
from twofa.security.hashing_pool import HashingPool
from twofa.security.passwords import PasswordHashing
from twofa.services.access.forward_auth import (
    AuthzAnswer,
    ForwardAuthService,
    OriginalRequest,
    Verdict,
)
from twofa.services.runtime import Gateway
from twofa.services.signin.group_refresh import GroupRefresher, RefreshOutcome
from twofa.services.signin.login import LoginResult, LoginService
from twofa.storage.repositories import Users

APP = "app.example.test"
CACHE_S = 300


@dataclass
class FakeDirectory:
    """An external directory held in memory; `down` makes it unreachable and `stall` holds
    every group question until set."""

    name: str = "ldap"
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    down: bool = False
    stall: asyncio.Event | None = None
    questions: list[str] = field(default_factory=list)

    async def authenticate(self, username: str, password: str) -> DirectoryUser | None:
        if username not in self.groups or password != "pw":
            return None
        return DirectoryUser(username, username.title(), "", self.groups[username])

    async def groups_of(self, username: str) -> tuple[str, ...] | None:
        self.questions.append(username)
        if self.stall is not None:
            await self.stall.wait()
        if self.down:
            raise DirectoryUnavailable("ldap://dc1 refused the connection")
        return self.groups.get(username)


@dataclass
class Site:
    gateway: Gateway
    directory: FakeDirectory
    refresher: GroupRefresher
    login: LoginService
    check: ForwardAuthService

    async def sign_in(self, username: str) -> str:
        _, anonymous = await self.gateway.sessions.open(BROWSER)
        outcome = await self.login.sign_in(anonymous, username, "pw", BROWSER)
        assert outcome.result is LoginResult.SIGNED_IN
        assert outcome.token is not None
        return outcome.token

    async def team_page(self, token: str) -> AuthzAnswer:
        self.check.forget(token)  # the next load, as one a second later would be
        return await self.check.check(token, OriginalRequest("https", APP, "/team/", "10.0.0.1"))

    async def stored_groups(self, username: str) -> list[str]:
        async with self.gateway.db.begin() as db:
            user = await Users(db).by_name(username)
            assert user is not None
            return sorted(await Users(db).group_names(user.id))


def make_site(gateway: Gateway, clock: FrozenClock, cache_s: int = CACHE_S, **limits: int) -> Site:
    directory = FakeDirectory(groups={"carol": ("team",), "dave": ("team",)})
    refresher = GroupRefresher(gateway.db, [directory], clock, cache_s, **limits)
    settings = Settings(mode=Mode.DEV, database_url="sqlite+aiosqlite://")
    login = LoginService(
        gateway.db,
        gateway.sessions,
        LocalDirectory(HashingPool(PasswordHashing(), threads=1)),
        clock,
        settings,
        gateway.console,
        [directory],
    )
    access = AccessSettings.model_validate(
        {
            "domains": [APP],
            "default_policy": "deny",
            "rules": [
                {
                    "domain": APP,
                    "resources": ["/team/*"],
                    "groups": ["team"],
                    "policy": "one_factor",
                }
            ],
        }
    )
    check = ForwardAuthService(gateway.db, gateway.sessions, access, refresher, clock=clock)
    return Site(gateway, directory, refresher, login, check)


@pytest.fixture
async def site(gateway: Gateway, clock: FrozenClock) -> AsyncIterator[Site]:
    built = make_site(gateway, clock)
    yield built
    await built.refresher.close()


async def test_groups_older_than_the_cache_time_are_refreshed_for_the_next_load(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    assert (await site.team_page(token)).verdict is Verdict.ALLOW
    site.directory.groups["carol"] = ("wiki",)  # left the team during the session
    clock.advance(timedelta(seconds=CACHE_S))

    assert (await site.team_page(token)).verdict is Verdict.ALLOW  # stored groups meanwhile
    await site.refresher.wait_idle()
    assert (await site.team_page(token)).verdict is Verdict.FORBIDDEN
    assert await site.stored_groups("carol") == ["wiki"]
    [row] = await audit_rows(site.gateway, "directory", "carol")
    assert (row.outcome, row.detail["added"], row.detail["removed"]) == (
        "groups_refreshed",
        ["wiki"],
        ["team"],
    )


async def test_groups_younger_than_the_cache_time_are_not_asked_for(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    clock.advance(timedelta(seconds=CACHE_S - 1))
    await site.team_page(token)
    await site.refresher.wait_idle()
    assert site.directory.questions == []


async def test_unchanged_groups_are_not_audited_and_wait_another_interval(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    clock.advance(timedelta(seconds=CACHE_S))
    await site.team_page(token)
    await site.refresher.wait_idle()
    clock.advance(timedelta(seconds=CACHE_S - 1))
    await site.team_page(token)
    await site.refresher.wait_idle()
    assert site.directory.questions == ["carol"]
    assert await audit_rows(site.gateway, "directory") == []


async def test_the_check_answers_while_the_directory_is_slow_and_asks_it_once(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    site.directory.stall = asyncio.Event()
    clock.advance(timedelta(seconds=CACHE_S))
    for _ in range(3):  # three loads while the question is still out
        answer = await asyncio.wait_for(site.team_page(token), timeout=5)
        assert answer.verdict is Verdict.ALLOW
    assert site.directory.questions == ["carol"]
    site.directory.stall.set()
    await site.refresher.wait_idle()


async def test_pending_refreshes_are_bounded(gateway: Gateway, clock: FrozenClock) -> None:
    site = make_site(gateway, clock, pending=1)
    carol, dave = await site.sign_in("carol"), await site.sign_in("dave")
    site.directory.stall = asyncio.Event()
    clock.advance(timedelta(seconds=CACHE_S))
    await site.team_page(carol)
    await site.team_page(dave)  # the queue is full: dave is handed over at a later load
    await asyncio.sleep(0)
    assert site.directory.questions == ["carol"]
    site.directory.stall.set()
    await site.refresher.wait_idle()
    await site.team_page(dave)
    await site.refresher.wait_idle()
    assert site.directory.questions == ["carol", "dave"]


async def test_a_user_the_directory_no_longer_knows_is_signed_out(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    del site.directory.groups["carol"]
    clock.advance(timedelta(seconds=CACHE_S))
    await site.team_page(token)
    await site.refresher.wait_idle()
    answer = await site.team_page(token)
    assert (answer.verdict, answer.reason) == (Verdict.SIGN_IN, "not signed in")
    assert await site.gateway.sessions.load(token) is None
    [row] = await audit_rows(site.gateway, "directory", "carol")
    assert (row.outcome, row.detail["sessions"]) == ("user_gone", "ended")


async def test_a_directory_that_is_down_keeps_the_groups_audits_once_and_retries_next_interval(
    site: Site, clock: FrozenClock
) -> None:
    token = await site.sign_in("carol")
    site.directory.down = True
    site.directory.groups["carol"] = ()
    for _ in range(2):  # two intervals of outage
        clock.advance(timedelta(seconds=CACHE_S))
        assert (await site.team_page(token)).verdict is Verdict.ALLOW
        await site.refresher.wait_idle()
        assert (await site.team_page(token)).verdict is Verdict.ALLOW  # not asked again yet
        await site.refresher.wait_idle()
    assert site.directory.questions == ["carol", "carol"]
    assert await site.stored_groups("carol") == ["team"]
    [row] = await audit_rows(site.gateway, "directory")
    assert (row.outcome, row.detail["directory"]) == ("groups_refresh_unavailable", "ldap")
    assert "refused the connection" in row.detail["error"]

    site.directory.down = False  # back: the next interval applies the directory's answer
    clock.advance(timedelta(seconds=CACHE_S))
    await site.team_page(token)
    await site.refresher.wait_idle()
    assert (await site.team_page(token)).verdict is Verdict.FORBIDDEN


async def test_a_refresh_of_a_user_deleted_in_twofa_meanwhile_changes_nothing(
    site: Site,
) -> None:
    await site.sign_in("carol")
    async with site.gateway.db.begin() as db:
        carol = await Users(db).by_name("carol")
        assert carol is not None
    await site.gateway.accounts.delete_user("carol")
    outcome = await site.refresher.refresh(carol.id, "carol", "ldap")
    assert outcome is RefreshOutcome.SKIPPED
    async with site.gateway.db.begin() as db:
        assert await Users(db).by_name("carol") is None  # not provisioned again


async def test_a_cache_time_of_zero_refreshes_only_at_sign_in(
    gateway: Gateway, clock: FrozenClock
) -> None:
    site = make_site(gateway, clock, cache_s=0)
    token = await site.sign_in("carol")
    site.directory.groups["carol"] = ("wiki",)
    clock.advance(timedelta(minutes=25))  # far past any cache time, short of idling out
    assert (await site.team_page(token)).verdict is Verdict.ALLOW
    await site.refresher.wait_idle()
    assert site.directory.questions == []
    await site.sign_in("carol")
    assert await site.stored_groups("carol") == ["wiki"]

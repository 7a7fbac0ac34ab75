"""`twofa demo` seeds alice, bob and admin with the passwords the README documents, which the
password rule would refuse anywhere else: the seeding works in demo mode only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.databases import sqlite_database
from twofa.cli.serve import DEMO_USERS, seed_demo
from twofa.config import Mode, Settings
from twofa.domain.client import ClientInfo
from twofa.services.admin.accounts import DemoOnly
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginResult

BROWSER = ClientInfo(ip="203.0.113.7", user_agent="pytest-browser")
PASSED = {LoginResult.SIGNED_IN, LoginResult.SECOND_FACTOR}  # the password was right


async def test_the_demo_users_sign_in_with_their_documented_passwords(tmp_path: Path) -> None:
    async with sqlite_database(tmp_path) as url:
        gateway = await Gateway.start(Settings(mode=Mode.DEMO, database_url=url))
        try:
            await seed_demo(gateway)
            await seed_demo(gateway)  # a second run finds them there
            for username, _, _, password, _ in DEMO_USERS:
                _, anonymous = await gateway.sessions.open(BROWSER, next_url="/")
                outcome = await gateway.login.sign_in(anonymous, username, password, BROWSER)
                assert outcome.result in PASSED, username
        finally:
            await gateway.close()


async def test_outside_demo_mode_the_demo_users_are_refused(tmp_path: Path) -> None:
    async with sqlite_database(tmp_path) as url:
        gateway = await Gateway.start(Settings(mode=Mode.DEV, database_url=url))
        try:
            with pytest.raises(DemoOnly):
                await seed_demo(gateway)
            assert await gateway.accounts.users() == []
        finally:
            await gateway.close()

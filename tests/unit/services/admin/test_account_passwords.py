"""Every way an admin sets a local user's password (add, set, bulk import) passes the one
password rule (security.password_rules) and saves nothing when it fails, naming the password
field; only `twofa demo`'s own seeding keeps its documented short passwords, in demo mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.services.conftest import PASSWORD, sign_in
from twofa.clock import FrozenClock
from twofa.config import Mode, Settings
from twofa.domain.account_input import ImportRejected, InvalidAccountInput, NewUser
from twofa.services.admin.accounts import DemoOnly
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginResult
from twofa.storage.repositories import Users

REFUSED = [
    ("short-pw-11", "at least 12 characters, this one has 11"),
    ("QwertyUiop12", "this is one of the most common passwords: choose one nobody would guess"),
    ("Alice-Liddell", "the password cannot be the username"),
]


async def stored_hash(gateway: Gateway, username: str) -> str | None:
    async with gateway.db() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        return user.password_hash


@pytest.mark.parametrize(("password", "why"), REFUSED)
async def test_a_weak_password_for_a_new_user_is_refused_by_field(
    gateway: Gateway, password: str, why: str
) -> None:
    with pytest.raises(InvalidAccountInput) as refused:
        await gateway.accounts.add_user("alice-liddell", password, is_admin=True)
    assert refused.value.fields == {"password": why}
    assert await gateway.accounts.users() == []


@pytest.mark.parametrize(("password", "why"), REFUSED)
async def test_a_weak_new_password_is_refused_and_the_old_one_kept(
    gateway: Gateway, password: str, why: str
) -> None:
    await gateway.accounts.add_user("alice-liddell", PASSWORD)
    before = await stored_hash(gateway, "alice-liddell")

    with pytest.raises(InvalidAccountInput) as refused:
        await gateway.accounts.set_password("alice-liddell", password)

    assert refused.value.fields == {"password": why}
    assert await stored_hash(gateway, "alice-liddell") == before


async def test_an_import_with_a_weak_password_imports_nobody(gateway: Gateway) -> None:
    users = [NewUser("carol", password="carol-password-1"), NewUser("dave", password="password123")]

    with pytest.raises(ImportRejected) as refused:
        await gateway.accounts.import_users(users)

    assert [(p.position, p.message) for p in refused.value.problems] == [
        (1, "password: at least 12 characters, this one has 11")
    ]
    assert await gateway.accounts.users() == []


async def test_a_user_may_be_created_without_a_password(gateway: Gateway) -> None:
    await gateway.accounts.add_user("carol", None)
    assert await stored_hash(gateway, "carol") is None


async def test_demo_users_with_short_passwords_exist_in_demo_mode_only(gateway: Gateway) -> None:
    with pytest.raises(DemoOnly):
        await gateway.accounts.add_demo_user(
            "alice", "demo-alice", display_name="Alice", email="", is_admin=False
        )
    assert await gateway.accounts.users() == []


@pytest.fixture
async def demo_gateway(database_url: str, clock: FrozenClock) -> AsyncIterator[Gateway]:
    running = await Gateway.start(Settings(mode=Mode.DEMO, database_url=database_url), clock=clock)
    try:
        yield running
    finally:
        await running.close()


async def test_the_demo_seeds_its_documented_passwords(demo_gateway: Gateway) -> None:
    await demo_gateway.accounts.add_demo_user(
        "bob", "demo-bob", display_name="Bob", email="", is_admin=False
    )
    assert (await sign_in(demo_gateway, "bob", "demo-bob")).result is LoginResult.SIGNED_IN
    with pytest.raises(InvalidAccountInput):  # the console, API and CLI still keep the rule
        await demo_gateway.accounts.add_user("carol", "demo-carol")

"""Admin actions: users, groups, memberships and 2FA switches, each with its audit record."""

from __future__ import annotations

import pytest

from tests.unit.services.conftest import PASSWORD, add_user, audit_rows, sign_in
from twofa.clock import FrozenClock
from twofa.domain.account_input import AccountError
from twofa.domain.client import ClientInfo
from twofa.domain.policy import PolicyDecision
from twofa.services.runtime import Gateway
from twofa.services.signin.login import LoginResult
from twofa.storage.repositories import DuoEnrolments


async def test_add_user_creates_an_enabled_admin_who_needs_a_second_factor(
    gateway: Gateway,
) -> None:
    await gateway.accounts.add_user("alice", PASSWORD, email="alice@example.com", is_admin=True)
    summary = await gateway.accounts.user("alice")
    assert summary.username == "alice"
    assert summary.display_name == "alice"  # defaults to the username
    assert summary.email == "alice@example.com"
    assert summary.enabled
    assert summary.is_admin
    assert summary.policy == PolicyDecision(True, "required for administrators")
    assert not summary.duo_configured
    rows = await audit_rows(gateway, "user_add", "alice")
    assert [(row.outcome, row.detail) for row in rows] == [
        ("ok", {"actor": "cli", "is_admin": True})
    ]


async def test_username_is_trimmed(gateway: Gateway) -> None:
    await gateway.accounts.add_user("  alice ", PASSWORD)
    assert [user.username for user in await gateway.accounts.users()] == ["alice"]


async def test_duplicate_user_is_refused(gateway: Gateway) -> None:
    await gateway.accounts.add_user("alice", PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        await gateway.accounts.add_user("alice", "another password")
    assert len(await gateway.accounts.users()) == 1
    assert (await sign_in(gateway, "alice")).result is LoginResult.SIGNED_IN


@pytest.mark.parametrize("username", ["", "   ", "al ice", "tab\tname", "x" * 151])
async def test_invalid_username_is_refused(gateway: Gateway, username: str) -> None:
    with pytest.raises(AccountError, match="invalid username"):
        await gateway.accounts.add_user(username, PASSWORD)
    assert await gateway.accounts.users() == []


async def test_unknown_user_is_an_account_error(gateway: Gateway) -> None:
    with pytest.raises(AccountError, match="no user 'ghost'"):
        await gateway.accounts.set_password("ghost", "ghost-password-1")
    with pytest.raises(AccountError, match="no user 'ghost'"):
        await gateway.accounts.user("ghost")


async def test_set_password_ends_the_users_sessions(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await add_user(gateway, "bob")
    alice = await sign_in(gateway, "alice")
    bob = await sign_in(gateway, "bob")
    await gateway.accounts.set_password("alice", "a brand new password")
    assert await gateway.sessions.load(alice.token) is None
    assert await gateway.sessions.load(bob.token) is not None
    assert (await sign_in(gateway, "alice")).result is LoginResult.REFUSED
    assert (await sign_in(gateway, "alice", "a brand new password")).result is LoginResult.SIGNED_IN
    assert len(await audit_rows(gateway, "user_password", "alice")) == 1


async def test_disable_ends_sessions_and_enable_restores_sign_in(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    outcome = await sign_in(gateway, "alice")
    await gateway.accounts.set_enabled("alice", False)
    assert await gateway.sessions.load(outcome.token) is None
    assert not (await gateway.accounts.user("alice")).enabled
    await gateway.accounts.set_enabled("alice", True)
    assert (await gateway.accounts.user("alice")).enabled
    kinds = [row.kind for row in await audit_rows(gateway, username="alice")]
    assert kinds[-2:] == ["user_disable", "user_enable"]


async def test_group_membership_is_idempotent(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await gateway.accounts.add_group("staff")
    assert await gateway.accounts.set_membership("staff", "alice", True) is True
    assert await gateway.accounts.set_membership("staff", "alice", True) is False
    assert (await gateway.accounts.groups())[0].members == ("alice",)
    assert (await gateway.accounts.user("alice")).groups == ("staff",)
    assert await gateway.accounts.set_membership("staff", "alice", False) is True
    assert await gateway.accounts.set_membership("staff", "alice", False) is False
    assert (await gateway.accounts.groups())[0].members == ()
    kinds = [row.kind for row in await audit_rows(gateway, username="alice")]
    assert kinds.count("group_add_member") == 1
    assert kinds.count("group_remove_member") == 1


async def test_duplicate_or_invalid_group_is_refused(gateway: Gateway) -> None:
    await gateway.accounts.add_group("staff")
    with pytest.raises(AccountError, match="already exists"):
        await gateway.accounts.add_group("staff")
    with pytest.raises(AccountError, match="invalid group name"):
        await gateway.accounts.add_group("  ")
    with pytest.raises(AccountError, match="no group 'ghost'"):
        await gateway.accounts.set_group_policy("ghost", True)


async def test_user_policy_is_audited_with_before_and_after(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    admin = ClientInfo(ip="192.0.2.1", user_agent="console")
    await gateway.accounts.set_user_policy("alice", True, client=admin)
    await gateway.accounts.set_user_policy("alice", False, client=admin)
    rows = await audit_rows(gateway, "policy_user", "alice")
    assert [(row.detail["before"], row.detail["after"]) for row in rows] == [
        (False, True),
        (True, False),
    ]
    assert rows[0].client_ip == "192.0.2.1"
    assert not (await gateway.accounts.user("alice")).policy.required


async def test_group_policy_applies_to_members_and_is_audited(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    await gateway.accounts.add_group("jira-admins")
    await gateway.accounts.set_membership("jira-admins", "alice", True)
    await gateway.accounts.set_group_policy("jira-admins", True)
    summary = await gateway.accounts.user("alice")
    assert summary.policy.required
    assert summary.policy.reason == "enabled via group jira-admins"
    assert (await gateway.accounts.groups())[0].twofa_enabled
    rows = await audit_rows(gateway, "policy_group")
    assert [(r.detail["group"], r.detail["before"], r.detail["after"]) for r in rows] == [
        ("jira-admins", False, True)
    ]


async def test_reset_second_factor_removes_the_duo_enrolment(
    gateway: Gateway, clock: FrozenClock
) -> None:
    user_id = await add_user(gateway, "alice", twofa=True)
    async with gateway.db.begin() as db:
        enrolment = await DuoEnrolments(db).get_or_create(user_id)
        enrolment.duo_user_id = "DUALICE"
        enrolment.configured_at = clock.now()
    assert (await gateway.accounts.user("alice")).duo_configured
    outcome = await sign_in(gateway, "alice")
    await gateway.accounts.reset_second_factor("alice")
    async with gateway.db.begin() as db:
        assert await DuoEnrolments(db).get(user_id) is None
    assert not (await gateway.accounts.user("alice")).duo_configured
    assert await gateway.sessions.load(outcome.token) is None
    assert len(await audit_rows(gateway, "user_reset_2fa", "alice")) == 1


async def test_users_are_listed_by_name(gateway: Gateway) -> None:
    for name in ("carol", "alice", "bob"):
        await add_user(gateway, name)
    assert [user.username for user in await gateway.accounts.users()] == ["alice", "bob", "carol"]

"""Who may use the console: an enabled admin gets in under their username; anyone else is
refused and the attempt audited. Also the signed-in account as the portal's pages show it."""

from __future__ import annotations

from tests.unit.services.conftest import BROWSER, PASSWORD, add_user, audit_rows
from twofa.services.admin.console_access import SignedInAccount
from twofa.services.runtime import Gateway
from twofa.storage.repositories import Users

PATH = "/admin/users"


async def add_admin(gateway: Gateway, username: str) -> int:
    await gateway.accounts.add_user(username, PASSWORD, is_admin=True)
    async with gateway.db.begin() as db:
        user = await Users(db).by_name(username)
        assert user is not None
        return user.id


async def test_an_enabled_admin_gets_in_without_an_audit_record(gateway: Gateway) -> None:
    root = await add_admin(gateway, "root")
    account = await gateway.console_access.signed_in_account(root)
    assert account == SignedInAccount("root", "root", is_admin=True)
    assert await gateway.console_access.admin_name(root, BROWSER, PATH) == "root"
    assert await audit_rows(gateway, "admin_denied") == []


async def test_a_user_without_the_role_is_refused_and_audited(gateway: Gateway) -> None:
    alice = await add_user(gateway, "alice")
    assert await gateway.console_access.admin_name(alice, BROWSER, PATH) is None
    [row] = await audit_rows(gateway, "admin_denied")
    assert (row.outcome, row.username, row.client_ip, row.detail) == (
        "forbidden",
        "alice",
        BROWSER.ip,
        {"path": PATH},
    )
    account = await gateway.console_access.signed_in_account(alice)
    assert account == SignedInAccount("alice", "Alice", is_admin=False)


async def test_a_disabled_admin_is_refused(gateway: Gateway) -> None:
    root = await add_admin(gateway, "root")
    await gateway.accounts.set_enabled("root", False)
    assert await gateway.console_access.admin_name(root, BROWSER, PATH) is None
    assert [row.username for row in await audit_rows(gateway, "admin_denied")] == ["root"]


async def test_an_account_that_is_gone_is_refused_and_shows_nothing(gateway: Gateway) -> None:
    assert await gateway.console_access.admin_name(999, BROWSER, PATH) is None
    assert [row.username for row in await audit_rows(gateway, "admin_denied")] == [""]
    assert await gateway.console_access.signed_in_account(999) is None

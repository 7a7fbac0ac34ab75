"""The application registry: secrets shown once and kept only as a hash, rotation, removal,
every change audited, bad redirect URIs refused, and the one rule of who may use a client."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from tests.unit.services.conftest import audit_rows
from twofa.services.idp.applications import NewApplication, verify_secret
from twofa.services.idp.errors import InvalidApplication, UnknownApplication
from twofa.services.runtime import Gateway
from twofa.storage.tables import ApplicationRow

JIRA = NewApplication("Jira", ["https://jira.example.com/plugins/servlet/oidc/callback"])


async def stored(gateway: Gateway, client_id: str) -> ApplicationRow:
    async with gateway.db() as db:
        row = await db.scalar(select(ApplicationRow).where(ApplicationRow.client_id == client_id))
    assert row is not None
    return row


async def test_a_confidential_client_secret_is_shown_once_and_kept_hashed(
    gateway: Gateway,
) -> None:
    issued = await gateway.applications.add(JIRA, actor="cli")

    assert issued.client_secret is not None
    assert len(issued.client_secret) >= 43
    row = await stored(gateway, issued.application.client_id)
    assert row.client_secret_hash is not None
    assert issued.client_secret not in row.client_secret_hash
    assert verify_secret(row, issued.client_secret)
    assert not verify_secret(row, issued.client_secret + "x")
    assert issued.application.second_factor_required  # the default
    assert [r.outcome for r in await audit_rows(gateway, "application")] == ["added"]


async def test_rotating_the_secret_stops_the_old_one(gateway: Gateway) -> None:
    first = await gateway.applications.add(JIRA, actor="cli")
    second = await gateway.applications.rotate_secret("Jira", actor="cli")

    assert first.client_secret is not None
    assert second.client_secret is not None
    row = await stored(gateway, first.application.client_id)
    assert not verify_secret(row, first.client_secret)
    assert verify_secret(row, second.client_secret)
    outcomes = [r.outcome for r in await audit_rows(gateway, "application")]
    assert outcomes == ["added", "secret_rotated"]


async def test_a_public_client_has_no_secret_to_rotate(gateway: Gateway) -> None:
    issued = await gateway.applications.add(
        NewApplication("CLI tool", ["http://127.0.0.1:8400/cb"], public=True), actor="cli"
    )
    assert issued.client_secret is None
    with pytest.raises(InvalidApplication):
        await gateway.applications.rotate_secret("CLI tool", actor="cli")


async def test_removed_client_is_gone_and_audited(gateway: Gateway) -> None:
    issued = await gateway.applications.add(JIRA, actor="cli")
    await gateway.applications.remove(issued.application.client_id, actor="cli")

    assert await gateway.applications.applications() == []
    with pytest.raises(UnknownApplication):
        await gateway.applications.show("Jira")
    assert [r.outcome for r in await audit_rows(gateway, "application")][-1] == "removed"


@pytest.mark.parametrize(
    "uri",
    [
        "http://jira.example.com/cb",  # plain http off loopback
        "https://jira.example.com/cb#frag",
        "/relative/cb",
        "javascript:alert(1)",
    ],
)
async def test_unusable_redirect_uris_are_refused(gateway: Gateway, uri: str) -> None:
    with pytest.raises(InvalidApplication) as refused:
        await gateway.applications.add(NewApplication("Bad", [uri]), actor="cli")
    assert refused.value.field == "redirect_uris"
    assert await gateway.applications.applications() == []


async def test_a_second_application_with_the_same_name_is_refused(gateway: Gateway) -> None:
    await gateway.applications.add(JIRA, actor="cli")
    with pytest.raises(InvalidApplication):
        await gateway.applications.add(JIRA, actor="cli")


@pytest.mark.parametrize("name", ["Jira\n", "Jira\nAdmin", " Jira", "", "x" * 101])
async def test_a_name_is_checked_whole(gateway: Gateway, name: str) -> None:
    with pytest.raises(InvalidApplication) as refused:
        await gateway.applications.add(NewApplication(name, list(JIRA.redirect_uris)), actor="cli")
    assert refused.value.field == "name"
    assert await gateway.applications.applications() == []


async def test_two_admins_adding_one_name_at_once_get_one_application_and_a_clear_refusal(
    gateway: Gateway,
) -> None:
    answers = await asyncio.gather(
        *(gateway.applications.add(JIRA, actor=f"admin{n}") for n in range(4)),
        return_exceptions=True,
    )
    added = [a for a in answers if not isinstance(a, BaseException)]
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert len(added) == 1
    assert all(isinstance(r, InvalidApplication) and r.field == "name" for r in refused)
    assert [app.name for app in await gateway.applications.applications()] == ["Jira"]


async def test_allowed_users_and_groups_limit_who_may_use_a_client(gateway: Gateway) -> None:
    everyone = (await gateway.applications.add(JIRA, actor="cli")).application
    limited = (
        await gateway.applications.add(
            NewApplication(
                "Finance", ["https://fin.example.com/cb"], allowed_users=["carol"],
                allowed_groups=["finance"],
            ),
            actor="cli",
        )
    ).application  # fmt: skip

    assert everyone.admits("bob", [])
    assert limited.admits("carol", [])
    assert limited.admits("dave", ["finance", "staff"])
    assert not limited.admits("bob", ["engineering"])

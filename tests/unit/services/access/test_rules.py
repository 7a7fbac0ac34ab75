"""Console access rules: checked like the settings file's, evaluated after them, every change
audited, and concurrent changes neither lose a rule nor tear the order (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.databases import postgres_database, sqlite_database
from tests.unit.services.conftest import BROWSER, audit_rows
from twofa.clock import FrozenClock
from twofa.config import AccessRuleSettings, AccessSettings, Mode, Settings
from twofa.domain.access import AccessRequest, Policy, RuleSource, decide
from twofa.services.access.live_rules import LiveConsoleRules
from twofa.services.access.rules import RuleEdit, UnknownAccessRule
from twofa.services.runtime import Gateway
from twofa.services.settings.console import SettingsRejected

ACCESS = AccessSettings(
    domains=("jira.example.com", "*.corp.example.com"),
    rules=(
        AccessRuleSettings(domain=("jira.example.com",), resources=("/rest/*",), policy="bypass"),
    ),
)
ADMIN = "admin"


@pytest.fixture(params=["sqlite", "postgresql"])
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[Gateway]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url:
        settings = Settings(mode=Mode.DEV, database_url=url, access=ACCESS)
        running = await Gateway.start(settings, clock=clock)
        try:
            yield running
        finally:
            await running.close()


def deny(domain: str = "jira.example.com", **fields: tuple[str, ...]) -> RuleEdit:
    return RuleEdit(domains=(domain,), policy="deny", **fields)


async def rejected(gateway: Gateway, edit: RuleEdit) -> dict[str, str]:
    with pytest.raises(SettingsRejected) as caught:
        await gateway.access_rules.add(edit, ADMIN, BROWSER)
    saved = await gateway.access_rules.console_rules()
    assert edit.domains not in [rule.rule.domain for rule in saved], "nothing is saved"
    return caught.value.problems


async def test_a_rule_for_an_unprotected_domain_is_refused_with_the_domains_listed(
    gateway: Gateway,
) -> None:
    problems = await rejected(gateway, deny("wiki.other.org"))
    assert "wiki.other.org is not one of the protected domains" in problems["domains"]
    assert "jira.example.com" in problems["domains"]


async def test_a_wildcard_is_accepted_only_under_a_protected_wildcard(gateway: Gateway) -> None:
    await gateway.access_rules.add(deny("*.eu.corp.example.com"), ADMIN, BROWSER)
    await gateway.access_rules.add(deny("git.corp.example.com"), ADMIN, BROWSER)
    problems = await rejected(gateway, deny("*.example.com"))
    assert "not one of the protected domains" in problems["domains"]


async def test_every_bad_field_is_named_at_once(gateway: Gateway) -> None:
    edit = RuleEdit(
        domains=("not a domain",),
        policy="allow",
        paths=("rest/*",),
        users=("two words",),
        networks=("10.0.0.1/8",),
    )
    problems = await rejected(gateway, edit)
    assert set(problems) == {"domains", "policy", "paths", "users", "networks"}
    assert "did you mean 10.0.0.0/8" in problems["networks"]
    assert "bypass, one_factor, two_factor, deny" in problems["policy"]


async def test_a_network_that_is_not_one_is_refused(gateway: Gateway) -> None:
    problems = await rejected(gateway, deny(networks=("10.0.0.300/8",)))
    assert "is not an IP address or network" in problems["networks"]


async def test_a_rejected_rule_is_audited(gateway: Gateway) -> None:
    await rejected(gateway, deny("wiki.other.org"))
    (row,) = await audit_rows(gateway, "access_rule")
    assert row.outcome == "rejected"
    assert "domains" in row.detail["problems"]


async def test_file_rules_come_first_then_console_rules_in_their_order(gateway: Gateway) -> None:
    first = await gateway.access_rules.add(deny(), ADMIN, BROWSER)
    second = await gateway.access_rules.add(
        RuleEdit(domains=("jira.example.com",), policy="two_factor"), ADMIN, BROWSER
    )
    rule_set = await gateway.access_rules.rule_set()
    assert [o.source for o in rule_set.origins] == [
        RuleSource.FILE,
        RuleSource.CONSOLE,
        RuleSource.CONSOLE,
    ]
    assert [o.rule_id for o in rule_set.origins] == [None, first.id, second.id]
    rest = AccessRequest("jira.example.com", "/rest/api", "203.0.113.9")
    assert decide(rule_set.rules, Policy.DENY, rest).policy is Policy.BYPASS  # the file wins
    browse = AccessRequest("jira.example.com", "/browse/X-1", "203.0.113.9")
    assert decide(rule_set.rules, Policy.ONE_FACTOR, browse).policy is Policy.DENY


async def test_moving_a_rule_keeps_the_others_in_order(gateway: Gateway) -> None:
    ids = [
        (await gateway.access_rules.add(deny(users=(f"user{n}",)), ADMIN, BROWSER)).id
        for n in range(4)
    ]
    moved = await gateway.access_rules.move(ids[3], 1, ADMIN, BROWSER)
    assert [rule.id for rule in moved] == [ids[3], ids[0], ids[1], ids[2]]
    assert [rule.position for rule in moved] == [1, 2, 3, 4]
    moved = await gateway.access_rules.move(ids[3], 99, ADMIN, BROWSER)  # clamped: last
    assert [rule.id for rule in moved] == ids
    assert [r.id for r in await gateway.access_rules.console_rules()] == ids


async def test_adding_at_a_position_inserts_there(gateway: Gateway) -> None:
    first = await gateway.access_rules.add(deny(users=("a",)), ADMIN, BROWSER)
    inserted = await gateway.access_rules.add(deny(users=("b",)), ADMIN, BROWSER, position=1)
    assert inserted.position == 1
    assert [r.id for r in await gateway.access_rules.console_rules()] == [inserted.id, first.id]


async def test_update_and_remove_are_audited_with_before_and_after(gateway: Gateway) -> None:
    added = await gateway.access_rules.add(deny(), ADMIN, BROWSER)
    edit = RuleEdit(domains=("jira.example.com",), policy="two_factor", groups=("staff",))
    updated = await gateway.access_rules.update(added.id, edit, "admin2", BROWSER)
    assert updated.rule.policy == "two_factor"
    assert updated.rule.groups == ("staff",)
    assert updated.updated_by == "admin2"
    await gateway.access_rules.remove(added.id, ADMIN, BROWSER)
    assert await gateway.access_rules.console_rules() == []
    rows = await audit_rows(gateway, "access_rule")
    assert [row.outcome for row in rows] == ["added", "updated", "removed"]
    assert rows[1].detail["before"]["policy"] == "deny"
    assert rows[1].detail["after"]["groups"] == ["staff"]
    assert rows[1].username == "admin2"
    assert rows[2].detail["before"]["policy"] == "two_factor"


async def test_an_unknown_rule_id_changes_nothing(gateway: Gateway) -> None:
    version = await gateway.access_rules.version()
    with pytest.raises(UnknownAccessRule, match="no console access rule with id 42"):
        await gateway.access_rules.remove(42, ADMIN, BROWSER)
    with pytest.raises(UnknownAccessRule):
        await gateway.access_rules.move(42, 1, ADMIN, BROWSER)
    assert await gateway.access_rules.version() == version


async def test_every_change_raises_the_version(gateway: Gateway) -> None:
    assert await gateway.access_rules.version() == 0
    added = await gateway.access_rules.add(deny(), ADMIN, BROWSER)
    await gateway.access_rules.move(added.id, 1, ADMIN, BROWSER)
    await gateway.access_rules.remove(added.id, ADMIN, BROWSER)
    assert await gateway.access_rules.version() == 3


async def test_concurrent_adds_and_moves_keep_every_rule_and_a_gapless_order(
    gateway: Gateway,
) -> None:
    seed = [
        (await gateway.access_rules.add(deny(users=(f"seed{n}",)), ADMIN, BROWSER)).id
        for n in range(3)
    ]
    adds = [
        gateway.access_rules.add(deny(users=(f"racer{n}",)), f"admin{n}", BROWSER) for n in range(8)
    ]
    moves = [gateway.access_rules.move(seed[n % 3], 1, ADMIN, BROWSER) for n in range(6)]
    await asyncio.gather(*adds, *moves)
    rules = await gateway.access_rules.console_rules()
    assert len(rules) == 11
    assert sorted(rule.rule.users[0] for rule in rules) == sorted(
        [f"seed{n}" for n in range(3)] + [f"racer{n}" for n in range(8)]
    )
    assert [rule.position for rule in rules] == list(range(1, 12))
    assert await gateway.access_rules.version() == 3 + 8 + 6


async def test_the_rule_book_follows_a_change_at_its_next_recheck(
    gateway: Gateway, clock: FrozenClock
) -> None:
    book = LiveConsoleRules(gateway.access_rules, clock)
    try:
        assert len((await book.current()).rules) == 1
        await gateway.access_rules.add(deny(), ADMIN, BROWSER)
        assert len((await book.current()).rules) == 1, "no database read within the second"
        clock.advance(timedelta(seconds=1))
        await book.current()  # starts the recheck in the background
        for _ in range(200):
            if len((await book.current()).rules) == 2:
                break
            await asyncio.sleep(0.01)
        assert len((await book.current()).rules) == 2
        assert (await book.current()).origins[1].source is RuleSource.CONSOLE
    finally:
        await book.close()


async def test_the_rule_book_starts_one_recheck_for_many_requests(
    gateway: Gateway, clock: FrozenClock
) -> None:
    book = LiveConsoleRules(gateway.access_rules, clock)
    calls = 0
    version = gateway.access_rules.version

    async def counted_version() -> int:
        nonlocal calls
        calls += 1
        return await version()

    try:
        await book.current()
        gateway.access_rules.version = counted_version  # type: ignore[method-assign]
        clock.advance(timedelta(seconds=5))
        await asyncio.gather(*(book.current() for _ in range(50)))
        for _ in range(200):
            if calls:
                break
            await asyncio.sleep(0.01)
        await asyncio.gather(*(book.current() for _ in range(50)))  # within the same second
        await asyncio.sleep(0.05)
        assert calls == 1
    finally:
        await book.close()

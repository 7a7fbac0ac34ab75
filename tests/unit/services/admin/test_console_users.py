"""What User Management and the Overview say about users: the status in words (required and
why, enrolled, locked, grace period), the CSV bulk enable's checks, and the counts when 2FA
is required for everyone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.services.conftest import START, add_user, audit_rows, sign_in
from twofa.clock import FrozenClock
from twofa.domain.client import CLI
from twofa.services.admin.console_users import (
    BulkEnableRejected,
    ConsoleUsersService,
    explain,
    grace_phrase,
    required_because,
    usernames_in_csv,
)
from twofa.services.admin.overview import OverviewService
from twofa.services.runtime import Gateway
from twofa.services.settings.two_factor import Enforcement, TwoFactorConfig
from twofa.storage.repositories import DuoEnrolments


def console_users(gateway: Gateway) -> ConsoleUsersService:
    return ConsoleUsersService(gateway.db, gateway.clock, gateway.console, gateway.gate)


@pytest.mark.parametrize(
    ("everyone", "user_switch", "groups", "reason"),
    [
        (False, False, [], ""),
        (False, True, [], "set for the user"),
        (False, False, ["engineering"], "via group engineering"),
        (False, True, ["ops", "sre"], "set for the user and via groups ops, sre"),
        (True, False, [], "for everyone"),
    ],
)
def test_required_because_names_every_reason(
    everyone: bool, user_switch: bool, groups: list[str], reason: str
) -> None:
    assert required_because(everyone, user_switch, groups) == reason


def test_explain_puts_disabled_and_locked_first() -> None:
    phrases = explain(
        enabled=False,
        required_reason="via group engineering",
        enrolled_methods=["Duo Push"],
        locked_until=START + timedelta(minutes=5),
        grace="",
        now=START,
    )
    assert phrases == (
        "disabled",
        "locked until 12:05 UTC",
        "required — via group engineering",
        "enrolled: Duo Push",
    )


def test_a_lock_ending_another_day_shows_the_date() -> None:
    late = datetime(2026, 11, 28, 23, 55, tzinfo=UTC)
    [locked, _] = explain(
        enabled=True,
        required_reason="",
        enrolled_methods=[],
        locked_until=late + timedelta(minutes=15),
        grace="",
        now=late,
    )
    assert locked == "locked until 2026-11-29 00:10 UTC"


def test_grace_is_shown_only_to_required_users_not_yet_enrolled() -> None:
    grace = "in grace period, 2 postponements left"
    pending = explain(
        enabled=True,
        required_reason="set for the user",
        enrolled_methods=[],
        locked_until=None,
        grace=grace,
        now=START,
    )
    assert pending[-1] == grace
    not_required = explain(
        enabled=True,
        required_reason="",
        enrolled_methods=[],
        locked_until=None,
        grace=grace,
        now=START,
    )
    assert not_required == ("not required",)


@pytest.mark.parametrize(
    ("config", "used", "started", "phrase"),
    [
        (TwoFactorConfig(), 0, None, ""),
        (TwoFactorConfig(grace_postponements=3), 1, None, "in grace period, 2 postponements left"),
        (TwoFactorConfig(grace_postponements=3), 2, None, "in grace period, 1 postponement left"),
        (
            TwoFactorConfig(grace_postponements=3),
            3,
            None,
            "grace period used up: must enrol at the next sign-in",
        ),
        (TwoFactorConfig(grace_days=7), 0, None, "in grace period, 7 days from the first sign-in"),
        (
            TwoFactorConfig(grace_days=7),
            0,
            START - timedelta(days=2),
            "in grace period, until 2026-12-03 12:00 UTC",
        ),
        (
            TwoFactorConfig(grace_days=7, grace_postponements=5),
            1,
            START - timedelta(days=8),
            "grace period used up: must enrol at the next sign-in",
        ),
    ],
)
def test_grace_phrase(
    config: TwoFactorConfig, used: int, started: datetime | None, phrase: str
) -> None:
    assert grace_phrase(config, used, started, START) == phrase


def test_csv_reader_keeps_line_numbers_and_ignores_other_columns() -> None:
    content = '\ufeffEmail, Username \r\na@x,alice\r\n\r\n"b,@x",bob\r\n'.encode()
    assert usernames_in_csv(content) == [(2, "alice"), (4, "bob")]


def test_csv_reader_reports_every_line_without_a_name() -> None:
    with pytest.raises(BulkEnableRejected) as rejected:
        usernames_in_csv(b"username,team\n,ops\nalice,ops\n  ,dev\n")
    assert [(p.line, p.message) for p in rejected.value.problems] == [
        (2, "no username on this line"),
        (4, "no username on this line"),
    ]


async def test_bulk_enable_counts_users_already_on_and_audits_only_changes(
    gateway: Gateway,
) -> None:
    await add_user(gateway, "alice", twofa=True)
    await add_user(gateway, "bob")
    result = await console_users(gateway).enable_from_csv(b"username\nalice\nbob\n", "root", CLI)
    assert (result.switched_on, result.already_on) == (("bob",), ("alice",))
    records = await audit_rows(gateway, "policy_user")
    assert [(row.username, row.detail["actor"]) for row in records] == [
        ("alice", "cli"),  # add_user's own switch
        ("bob", "root"),
    ]


async def test_search_explains_a_locked_user(gateway: Gateway) -> None:
    await add_user(gateway, "alice")
    for _ in range(gateway.settings.login_failures_per_user):
        await sign_in(gateway, "alice", "wrong")
    [alice], total = await console_users(gateway).search("ali")
    assert total == 1
    assert alice.locked_until == START + timedelta(minutes=gateway.settings.lockout_minutes)
    assert alice.explanation[0] == "locked until 12:15 UTC"


async def test_everyone_enforcement_requires_every_enabled_account(
    gateway: Gateway, clock: FrozenClock
) -> None:
    alice_id = await add_user(gateway, "alice", password=None)
    await add_user(gateway, "bob", password=None)
    await add_user(gateway, "carol", password=None)
    await gateway.accounts.set_enabled("carol", False)
    async with gateway.db.begin() as db:
        (await DuoEnrolments(db).get_or_create(alice_id)).configured_at = clock.now()
    await gateway.console.save_two_factor(
        TwoFactorConfig(enforcement=Enforcement.EVERYONE), "root", CLI
    )
    figures = await OverviewService(gateway.db, gateway.clock, gateway.console).users()
    assert (figures.required, figures.enrolled, figures.pending) == (2, 1, 1)
    assert (figures.total, figures.disabled, figures.everyone) == (3, 1, True)
    [bob] = (await console_users(gateway).search("bob"))[0]
    assert bob.explanation[0] == "required — for everyone"


async def test_user_search_text_is_matched_literally(gateway: Gateway) -> None:
    await add_user(gateway, "axb", password=None)
    await add_user(gateway, "a_b", password=None)
    found, total = await console_users(gateway).search("a_b")
    assert [user.username for user in found] == ["a_b"]
    assert total == 1


async def test_account_summary_follows_everyone_enforcement(gateway: Gateway) -> None:
    await add_user(gateway, "bob", password=None)
    await gateway.console.save_two_factor(
        TwoFactorConfig(enforcement=Enforcement.EVERYONE), "root", CLI
    )
    assert (await gateway.accounts.user("bob")).policy.required

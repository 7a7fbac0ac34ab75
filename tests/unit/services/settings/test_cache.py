"""The per-process copy of the console settings: served without the database between checks,
a change made elsewhere (another node) seen at the next once-a-second check, a save in this
process seen at once, and one reload for a burst of readers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import event

from tests.unit.services.conftest import BROWSER
from twofa.clock import FrozenClock
from twofa.services.runtime import Gateway
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.two_factor import TWO_FACTOR_KEY, TwoFactorConfig
from twofa.storage.repositories import ConsoleSettings


def count_statements(gateway: Gateway) -> list[str]:
    seen: list[str] = []
    event.listen(
        gateway.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_rest: seen.append(statement),
    )
    return seen


async def save_elsewhere(gateway: Gateway, methods: list[str]) -> None:
    """What another node's save looks like from here: the row changes, nobody tells us."""
    async with gateway.db.begin() as db:
        await ConsoleSettings(db).upsert(
            TWO_FACTOR_KEY,
            {"methods": methods, "first_method": methods[0]},
            datetime(2026, 11, 28, tzinfo=UTC),
            "other-node",
        )


async def test_reads_between_checks_do_not_touch_the_database(
    gateway: Gateway, clock: FrozenClock
) -> None:
    cache = SettingsCache(gateway.db, clock)
    await save_elsewhere(gateway, ["totp"])
    first = await cache.snapshot()
    statements = count_statements(gateway)
    for _ in range(50):
        assert await cache.snapshot() is first
    assert statements == []


async def test_a_change_elsewhere_is_seen_after_the_recheck_interval(
    gateway: Gateway, clock: FrozenClock
) -> None:
    cache = SettingsCache(gateway.db, clock)
    await save_elsewhere(gateway, ["totp"])
    assert (await cache.snapshot()).value(TWO_FACTOR_KEY)["methods"] == ["totp"]  # type: ignore[index]
    await save_elsewhere(gateway, ["email_otp"])
    clock.advance(timedelta(seconds=0.5))
    assert (await cache.snapshot()).value(TWO_FACTOR_KEY)["methods"] == ["totp"]  # type: ignore[index]
    clock.advance(timedelta(seconds=0.6))
    assert (await cache.snapshot()).value(TWO_FACTOR_KEY)["methods"] == ["email_otp"]  # type: ignore[index]


async def test_an_unchanged_version_keeps_the_snapshot_with_one_cheap_query(
    gateway: Gateway, clock: FrozenClock
) -> None:
    cache = SettingsCache(gateway.db, clock)
    first = await cache.snapshot()
    clock.advance(timedelta(seconds=2))
    statements = count_statements(gateway)
    assert await cache.snapshot() is first
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_a_save_through_the_console_is_seen_at_once(gateway: Gateway) -> None:
    assert (await gateway.console.two_factor()).methods == ("duo_push",)
    await gateway.console.save_two_factor(
        TwoFactorConfig(methods=("totp",), first_method="totp"), "admin", BROWSER
    )
    assert (await gateway.console.two_factor()).methods == ("totp",)
    assert await gateway.gate.allowed_codes() == ("totp",)


async def test_a_burst_of_readers_reloads_once(gateway: Gateway, clock: FrozenClock) -> None:
    cache = SettingsCache(gateway.db, clock)
    statements = count_statements(gateway)
    snapshots = await asyncio.gather(*(cache.snapshot() for _ in range(20)))
    assert all(snapshot is snapshots[0] for snapshot in snapshots)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


async def test_callers_get_private_copies(gateway: Gateway, clock: FrozenClock) -> None:
    await save_elsewhere(gateway, ["totp"])
    cache = SettingsCache(gateway.db, clock)
    value = (await cache.snapshot()).value(TWO_FACTOR_KEY)
    assert value is not None
    value["methods"].append("tampered")
    assert (await cache.snapshot()).value(TWO_FACTOR_KEY)["methods"] == ["totp"]  # type: ignore[index]

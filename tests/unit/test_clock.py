from datetime import UTC, datetime, timedelta

import pytest

from twofa.clock import FrozenClock, SystemClock


def test_system_clock_is_aware_utc() -> None:
    assert SystemClock().now().tzinfo is UTC


def test_frozen_clock_moves_only_when_advanced() -> None:
    clock = FrozenClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    assert clock.now() == clock.now()
    clock.advance(timedelta(seconds=30))
    assert clock.now() == datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC)


async def test_frozen_clock_notes_a_sleep_and_moves_on_at_once() -> None:
    clock = FrozenClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    await clock.sleep(2.0)
    await clock.sleep(4.0)
    assert clock.slept == [2.0, 4.0]
    assert clock.now() == datetime(2026, 11, 28, 12, 0, 6, tzinfo=UTC)


def test_frozen_clock_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        FrozenClock(datetime(2026, 11, 28, 12, 0))  # noqa: DTZ001


def test_system_clock_monotonic_never_goes_back() -> None:
    clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_frozen_clock_monotonic_moves_with_advance_and_never_back() -> None:
    clock = FrozenClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    start = clock.monotonic()
    assert clock.monotonic() == start
    clock.advance(timedelta(seconds=1.5))
    assert clock.monotonic() == start + 1.5
    clock.advance(timedelta(hours=-1))  # the wall clock may go back; the monotonic one not
    assert clock.monotonic() == start + 1.5

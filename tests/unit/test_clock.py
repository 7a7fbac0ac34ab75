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


def test_frozen_clock_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        FrozenClock(datetime(2026, 11, 28, 12, 0))  # noqa: DTZ001

"""A clock for a gateway served over real HTTP: the system's time, so TOTP codes, Duo and
cookies behave as they do in production, but a monotonic reading the test can move ahead, so
the gateway's caches (console settings, access rules, forward-auth sessions) expire when the
test says instead of after a sleep."""

from __future__ import annotations

from twofa.clock import SystemClock


class SkippableClock(SystemClock):
    def __init__(self) -> None:
        self._ahead = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self._ahead

    def skip(self, seconds: float) -> None:
        """As if `seconds` had passed, for the caches only (the wall clock does not move)."""
        self._ahead += seconds

"""A log line for something that can happen many times a second while a part is away (Redis
unreachable under load, a flood of messages that are not ours): said the first time, then at
most once per interval with how many were not said, so the log says what is wrong without
drowning what else it has to say."""

from __future__ import annotations

import logging
from collections.abc import Callable


class OccasionalLog:
    def __init__(
        self, log: logging.Logger, level: int, every_s: float, monotonic: Callable[[], float]
    ) -> None:
        self._log = log
        self._level = level
        self._every_s = every_s
        self._monotonic = monotonic
        self._said_at = float("-inf")
        self._unsaid = 0

    def say(self, message: str, *args: object) -> bool:
        """Logs `message % args` unless a line was logged less than the interval ago; whether
        it was logged."""
        now = self._monotonic()
        if now - self._said_at < self._every_s:
            self._unsaid += 1
            return False
        if self._unsaid:
            message += " (and %d more like it since the last such line)"
            args = (*args, self._unsaid)
        self._log.log(self._level, message, *args)
        self._said_at, self._unsaid = now, 0
        return True

"""Records which thread ran a function: slow hashing must never run on the event loop's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def in_thread_log(real: Callable[P, R], threads: list[threading.Thread]) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    return wrapper

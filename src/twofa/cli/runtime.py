"""Process-level settings for long-running twofa servers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run_server(main: Coroutine[Any, Any, T]) -> T:
    """Runs a server's main coroutine on uvloop: uvicorn picks uvloop only when it owns the
    loop, and here twofa does (it checks the database before binding)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a process that holds thousands of waiting requests.

    Every pending push is a handful of long-lived objects; Python's default thresholds then
    run full collections that pause the loop for hundreds of milliseconds under load
    (bench/duo_push_capacity.py showed the approval-to-allow p99 halve with this).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def freeze_what_start_up_built() -> None:
    """Called once a server has started (its database pools, caches and compiled statements
    built): those live as long as the process, so they move out of the collector's way, and
    a full collection under load walks only what came after."""
    gc.freeze()

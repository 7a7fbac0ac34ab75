"""When a test hangs, reports what every thread and every asyncio task was waiting on.

pytest-timeout fails a hung test after `timeout` seconds with the main thread's stack. For an
async test that stack is only the event loop idling in select(), which says nothing, so a
little before the timeout this writes each thread's stack and each pending task's chain of
awaits to the test's captured stderr, where the failure report shows them (under xdist too).

pytest-timeout fires once: a teardown that hangs after it would hang for good. So a test still
not done a minute after its timeout gets the report written to the run's own stderr, and its
process ends; xdist names the test as crashed and starts a new worker for the rest.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import sys
import threading
import traceback
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any

import pytest

REPORT_BEFORE_TIMEOUT_S = 15.0
GIVE_UP_AFTER_TIMEOUT_S = 60.0


def _await_chain(awaitable: Any) -> Iterator[FrameType]:
    """The frames a suspended coroutine is waiting in, outermost first: a task's own stack
    (Task.get_stack) stops at its top coroutine."""
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            yield frame
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    # The loops run in other threads than this timer's, so asyncio's own lookup can't see
    # them; a diagnostic may afford a walk of the heap.
    return [
        found
        for found in gc.get_objects()
        if isinstance(found, asyncio.AbstractEventLoop) and found.is_running()
    ]


def write_hang_report(test_id: str, state: str = "is still running") -> None:
    # sys.stderr is the capture of the phase running now (setup, call or teardown): what is
    # written there is in that test's report.
    out = sys.stderr
    print(f"\n===== {test_id} {state}: threads and asyncio tasks =====", file=out)
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    for loop in _running_loops():
        for task in list(asyncio.all_tasks(loop)):
            print(f"\n--- task {task.get_name()}: {task.get_coro()!r}", file=out)
            frames = [(frame, frame.f_lineno) for frame in _await_chain(task.get_coro())]
            print("".join(traceback.format_list(traceback.StackSummary.extract(frames))), file=out)
    out.flush()


def give_up(item: pytest.Item) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # past the capture, to the run's own stderr
        write_hang_report(
            item.nodeid, f"is still not done {GIVE_UP_AFTER_TIMEOUT_S:.0f} s after its timeout"
        )
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    """Times setup, call and teardown together, as pytest-timeout does."""
    timeout = float(item.config.getini("timeout") or 0)
    if timeout <= REPORT_BEFORE_TIMEOUT_S:
        yield
        return
    timers = [
        threading.Timer(timeout - REPORT_BEFORE_TIMEOUT_S, write_hang_report, (item.nodeid,)),
        threading.Timer(timeout + GIVE_UP_AFTER_TIMEOUT_S, give_up, (item,)),
    ]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()


def _tasks_in(report_text: str, frames_per_task: int = 4) -> list[str]:
    """From a hang report: each pending task and the innermost frames it waits in."""
    lines: list[str] = []
    for block in report_text.split("\n--- task ")[1:]:
        head, _, stack = block.partition("\n")
        frames = [line for line in stack.splitlines() if line.startswith('  File "')]
        lines.append(f"task {head[:160]}")
        lines.extend(frame.strip()[:200] for frame in frames[-frames_per_task:])
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The asyncio tasks of every hung test again, short, at the very end of the run: the
    full report sits in the failure's captured output, which a CI log's tail cuts off."""
    for report in terminalreporter.stats.get("failed", []):
        for _, content in getattr(report, "sections", []):
            if "threads and asyncio tasks" not in content:
                continue
            terminalreporter.write_sep("-", f"hung: {report.nodeid}")
            for line in _tasks_in(content):
                terminalreporter.write_line(line)

"""The report a hung test gets (tests.support.hang_report): it must say where each asyncio
task waits, which a plain stack of the event loop's thread never shows."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from tests.support.hang_report import write_hang_report


async def waits_for_a_reply_that_never_comes(started: threading.Event) -> None:
    started.set()
    await asyncio.Event().wait()


def test_the_report_names_the_line_a_stuck_task_waits_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stuck = loop.create_task(waits_for_a_reply_that_never_comes(started), name="stuck-read")

    def run() -> None:
        try:
            loop.run_until_complete(stuck)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(5)
        with (tmp_path / "report").open("w+") as out:  # faulthandler writes to a real file
            monkeypatch.setattr(sys, "stderr", out)
            write_hang_report("tests/x.py::test_y")
    finally:
        loop.call_soon_threadsafe(stuck.cancel)
        thread.join(timeout=5)

    report = (tmp_path / "report").read_text()
    assert "tests/x.py::test_y is still running" in report
    assert "--- task stuck-read" in report
    assert "in waits_for_a_reply_that_never_comes" in report
    assert "await asyncio.Event().wait()" in report
    assert "Thread 0x" in report  # every thread's stack, from faulthandler

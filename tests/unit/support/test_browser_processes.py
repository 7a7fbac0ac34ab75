"""The e2e tests' way out of a Chromium that will not close (tests.support.browser_processes):
it kills the browser's processes below this one, and nothing else."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.browser_processes import browser_processes, within

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def stuck_chromium_and_bystander() -> Iterator[tuple[subprocess.Popen[bytes], ...]]:
    """A child whose command line reads like Chromium's, and one that does not."""
    chromium = subprocess.Popen([sys.executable, "-c", SLEEP, "/usr/lib/chromium/chromium"])
    bystander = subprocess.Popen([sys.executable, "-c", SLEEP, "slapd"])
    try:
        yield chromium, bystander
    finally:
        for process in (chromium, bystander):
            process.kill()
            process.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_a_stuck_close_kills_the_browser_and_spares_the_rest(
    stuck_chromium_and_bystander: tuple[subprocess.Popen[bytes], ...],
) -> None:
    chromium, bystander = stuck_chromium_and_bystander
    assert chromium.pid in browser_processes(os.getpid())
    assert bystander.pid not in browser_processes(os.getpid())

    await within(asyncio.Event().wait(), "closing Chromium", timeout_s=0.2)

    assert chromium.wait(timeout=10) == -9  # SIGKILL
    assert bystander.poll() is None  # still running


async def test_a_close_that_finishes_kills_nothing(
    stuck_chromium_and_bystander: tuple[subprocess.Popen[bytes], ...],
) -> None:
    chromium, _ = stuck_chromium_and_bystander
    await within(asyncio.sleep(0.01), "closing Chromium", timeout_s=5)
    assert chromium.poll() is None

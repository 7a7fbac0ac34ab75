"""Ends a Chromium that Playwright could not close: `browser.close()` and the driver's exit
wait for the browser's processes with no timeout of their own, and a browser that does not
exit now and then (a known, rare Chromium behaviour) would hold the test run forever."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable
from pathlib import Path

log = logging.getLogger("tests.e2e")
PROC = Path("/proc")
# Playwright's driver (node ... run-driver) and the Chromium it launched, never anything else
# this process started (slapd, nginx, the gateway's own helpers).
BROWSER_MARKERS = (b"run-driver", b"chromium", b"chrome_crashpad")


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # The command name in brackets may itself hold spaces: the parent comes after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def browser_processes(root: int) -> list[int]:
    """Playwright's driver and Chromium processes below `root`, deepest last."""
    if not PROC.is_dir():
        return []  # not Linux: nothing to look through
    children, found, queue = _children_by_parent(), [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            queue.append(child)
            try:
                command = (PROC / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            if any(marker in command for marker in BROWSER_MARKERS):
                found.append(child)
    return found


def kill_browser_processes() -> list[int]:
    killed = []
    for pid in browser_processes(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


async def within(step: Awaitable[None], what: str, timeout_s: float) -> None:
    """Awaits a Playwright shutdown step; one that outlasts `timeout_s` is abandoned and the
    browser's processes are killed, so the test's teardown goes on."""
    try:
        await asyncio.wait_for(step, timeout_s)
    except TimeoutError:
        killed = kill_browser_processes()
        log.warning("%s took over %.0f s: killed processes %s", what, timeout_s, killed)

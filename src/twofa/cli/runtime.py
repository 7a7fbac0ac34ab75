"""Process-level settings for long-running twofa servers."""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a process that holds thousands of waiting requests.

    Every pending push is a handful of long-lived objects; Python's default thresholds then
    run full collections that pause the loop for hundreds of milliseconds under load
    (bench/duo_push_capacity.py showed the approval-to-allow p99 halve with this).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

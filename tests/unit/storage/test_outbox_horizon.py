"""`Horizon.passed`: every transaction below the one a reader took has ended only when the
snapshot counts them all (its xmax, one past the newest ended transaction, is above the one
taken) and none of them runs (its xmin is at or above it)."""

from __future__ import annotations

import pytest

from twofa.storage.change_outbox import Horizon

TAKEN = 100


@pytest.mark.parametrize(
    ("xmin", "xmax", "passed"),
    [
        (101, 101, True),  # nothing runs, and the taken one has ended
        (100, 105, True),  # none below the taken one runs
        (99, 105, False),  # one below the taken one still runs
        (100, 100, False),  # the taken one has not ended: one below it may run uncounted
        (90, 95, False),  # a snapshot from before the taken one
    ],
)
def test_passed_needs_the_taken_transaction_ended_and_none_below_it_running(
    xmin: int, xmax: int, passed: bool
) -> None:
    assert Horizon(xmin=xmin, xmax=xmax).passed(TAKEN) is passed

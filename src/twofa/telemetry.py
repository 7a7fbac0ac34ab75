"""The gateway's Prometheus metrics, defined once here so every layer counts into the same
series, and their exposition for `GET /metrics` (web/metrics.py).

A leaf: it imports only prometheus_client and the standard library, so any layer may count.
Label values are always from a short fixed list in the code (a verdict, a method code, a Duo
endpoint), never from a request (a username, a path, an address): each value is a series
the server keeps forever.

Under `twofa serve --workers N` every worker counts into files of its own in
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and a scrape of any worker
sums them all (`shared_metrics_directory`, `metrics_page`). The library picks its value class
when it is first imported, so the variable must be in the environment before a worker starts:
the supervisor sets it, never a worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format every Prometheus reads (the names here need nothing newer).
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

# No `*_created` series beside each counter: multiprocess mode has none, so one worker or
# several expose the same series, and each would double what a scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Forward-auth is answered in 0.1 ms from memory and in a few ms on a database read; a second
# is already an outage for the protected app.
_FAST_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Duo answers in tens of ms; auth_status long-polls for up to `duo.long_poll_s` (25 s).
_DUO_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

FORWARD_AUTH_VERDICTS: Final = ("allow", "sign_in", "forbidden", "bad_path", "unavailable", "error")

FORWARD_AUTH_DECISIONS: Final = Counter(
    "twofa_forward_auth_decisions",
    "Forward-auth answers by verdict (allow, sign_in, forbidden, bad_path; unavailable: the "
    "database could not be reached; error: a failure answered 500).",
    ["verdict"],
)
FORWARD_AUTH_SECONDS: Final = Histogram(
    "twofa_forward_auth_seconds",
    "Time to answer one forward-auth check, in the gateway.",
    buckets=_FAST_BUCKETS,
)
SESSION_CACHE: Final = Counter(
    "twofa_session_cache",
    "Session look-ups of forward-auth answered from the node's memory (hit) or the database "
    "(miss).",
    ["result"],
)
# livemin: one series for the whole node that reads 0 while any live worker is without its
# feed (that worker falls back to short reads), which is what an alert wants; liveall would
# add a `pid` label, a new series at every worker restart. A dead worker's value is dropped
# (mark_process_dead), so it cannot hold the node at 0.
CHANGE_FEED_CONNECTED: Final = Gauge(
    "twofa_change_feed_connected",
    "1 while every worker of this node receives the change feed (Redis or PostgreSQL), "
    "0 while any does not.",
    multiprocess_mode="livemin",
)
SIGN_INS: Final = Counter(
    "twofa_sign_ins",
    "First-factor sign-in attempts by outcome.",
    ["outcome"],
)
SECOND_FACTOR_OUTCOMES: Final = Counter(
    "twofa_second_factor",
    "Second-factor answers by method code and outcome.",
    ["method", "outcome"],
)
DUO_API_SECONDS: Final = Histogram(
    "twofa_duo_api_seconds",
    "Duo Auth API calls by endpoint, including the long polls of auth_status.",
    ["endpoint"],
    buckets=_DUO_BUCKETS,
)
DUO_API_ERRORS: Final = Counter(
    "twofa_duo_api_errors",
    "Duo Auth API calls that failed, by endpoint and kind of failure.",
    ["endpoint", "kind"],
)
PUSHES_PENDING: Final = Gauge(
    "twofa_duo_pushes_pending",
    "Duo pushes sent and not answered yet, summed over the live workers.",
    multiprocess_mode="livesum",
)
HASHING_QUEUE_DEPTH: Final = Gauge(
    "twofa_hashing_queue_depth",
    "Slow hashes (argon2) waiting for or running in the bounded executor, summed over the "
    "live workers.",
    multiprocess_mode="livesum",
)

# The series that exist from the start at 0, so that rate() and absent() work before the
# first event. Only fixed lists; other labels appear when first counted.
for _verdict in FORWARD_AUTH_VERDICTS:
    FORWARD_AUTH_DECISIONS.labels(_verdict)
for _result in ("hit", "miss"):
    SESSION_CACHE.labels(_result)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_ENV))


def _registry() -> CollectorRegistry:
    if not multiprocess_enabled():
        return REGISTRY  # one process: its own values, with the process and GC collectors
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def metrics_page() -> bytes:
    """Every metric in the text exposition format: this process's, or under multiprocess
    mode every worker's files summed (counters, histograms) or combined by each gauge's
    mode. The collector reads the files at each scrape, so a new registry costs nothing."""
    return generate_latest(_registry())


@contextmanager
def shared_metrics_directory() -> Iterator[str]:
    """For a supervisor of worker processes: a fresh private directory for the workers'
    metric files, named in the environment the workers inherit, removed at exit. A directory
    left from an earlier run would add its counts to this one's, so it is never reused (nor
    one named in the environment already)."""
    path = tempfile.mkdtemp(prefix="twofa-metrics-")  # mode 0700: this user's only
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int, path: str) -> None:
    """Drops a dead worker's live gauges (pushes pending, queue depth, feed connected); its
    counters stay, as a counter never goes down."""
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]

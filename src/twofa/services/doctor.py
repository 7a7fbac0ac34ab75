"""`twofa doctor`: asks each part the gateway leans on whether it answers, one by one, so an
admin sees in one place what is wrong before users do: the database schema, Duo's keys, Duo
alerts of the last hour (fraud reports, Duo refusing or rate-limiting twofa), usernames under a
distributed password attack in the last hour, the mail server, values still sealed by an old
secret key, this node's clock against the database server's, the change feed between gateway
processes and each external directory. Nothing is
changed, sent or audited.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Final

from sqlalchemy.exc import SQLAlchemyError

from twofa.directories.base import DirectoryUnavailable, ExternalDirectory
from twofa.security.sealing import SealError
from twofa.services.duo.push_fatigue import FATIGUE_KIND
from twofa.services.mail.delivery import SmtpNotConfigured, SmtpProblem
from twofa.services.runtime import Gateway
from twofa.services.signin.attack_alerts import attacked_usernames
from twofa.storage.audit_log import AuditCriteria, AuditSearch
from twofa.storage.database import schema_status
from twofa.storage.database_time import server_time

# A name no directory holds: "no such user" proves the service account binds and searches.
PROBE_USERNAME: Final = "twofa-doctor-probe-0"
FEED_WAIT_S: Final = 3.0  # a feed that connects at all does so well within this
# Each check has its own timeouts; this bounds one that has none in some library's path.
CHECK_DEADLINE_S: Final = 30.0
# "Duo alerts" looks this far back in the audit log, at most at this many records a kind.
ALERT_WINDOW: Final = timedelta(hours=1)
MOST_ALERTS_READ: Final = 1000
# Duo refusing twofa itself, by the HTTP status its `duo_error` audit records carry (the
# error text "Duo answered 429 code 42901: …", or the outcome, Duo's code, as a fallback).
DUO_REFUSALS: Final = {
    401: "refused twofa's keys or signature",
    403: "refused twofa access",
    429: "rate-limited twofa",
}
DUO_ANSWERED = re.compile(r"\bDuo answered (\d{3})\b")
# This node's clock against the database server's, which every node shares: authenticator
# codes are checked, sessions end and are swept, by the nodes' clocks, so they must agree. A
# code's step is 30 s and the sweep allows 2 minutes; within a couple of seconds is NTP's norm.
CLOCK_WARN_S: Final = 2.0
CLOCK_FAIL_S: Final = 30.0


class State(Enum):
    OK = "ok"
    FAILED = "FAILED"
    NOT_SET_UP = "not set up"
    NOT_CHECKED = "not checked"  # it reads its settings from a database that is not ready
    WARNING = "warning"  # works now, and needs an admin's action soon; not a failure


@dataclass(frozen=True)
class Finding:
    part: str
    state: State
    detail: str


def failed_parts(findings: list[Finding]) -> list[str]:
    return [finding.part for finding in findings if finding.state is State.FAILED]


async def examine(gateway: Gateway) -> list[Finding]:
    """Every check, in a fixed order; one failing never stops the others, but those that read
    their settings from the database wait for a database that is ready."""
    database = await _bounded("database", lambda: _database(gateway))
    needs_database: list[tuple[str, Callable[[], Awaitable[Finding]]]] = [
        ("Duo", lambda: _duo(gateway)),
        ("Duo alerts", lambda: _duo_alerts(gateway)),
        ("sign-in attacks", lambda: _sign_in_attacks(gateway)),
        ("mail server", lambda: _mail_server(gateway)),
        ("secret keys", lambda: _secret_keys(gateway)),
    ]
    independent: list[tuple[str, Callable[[], Awaitable[Finding]]]] = [
        ("clock", lambda: _clock(gateway)),  # any database that answers, migrated or not
        ("change feed", lambda: _change_feed(gateway)),
        *(
            (f"directory {directory.name}", _directory_check(directory))
            for directory in gateway.directories
        ),
    ]
    findings = [database]
    for part, check in needs_database:
        if database.state is State.OK:
            findings.append(await _bounded(part, check))
        else:
            findings.append(Finding(part, State.NOT_CHECKED, "its settings live in the database"))
    findings += [await _bounded(part, check) for part, check in independent]
    return findings


async def _bounded(part: str, check: Callable[[], Awaitable[Finding]]) -> Finding:
    try:
        return await asyncio.wait_for(check(), CHECK_DEADLINE_S)
    except TimeoutError:
        return Finding(part, State.FAILED, f"no answer within {CHECK_DEADLINE_S:.0f} s")


async def _database(gateway: Gateway) -> Finding:
    try:
        status = await schema_status(gateway.engine)
    except (SQLAlchemyError, OSError) as exc:
        return Finding("database", State.FAILED, f"cannot be reached: {exc}")
    return Finding("database", State.OK if status.up_to_date else State.FAILED, status.describe())


async def _duo(gateway: Gateway) -> Finding:
    try:
        effective = await gateway.console.effective_duo()
    except SealError as exc:  # e.g. the key that sealed it was removed from secret_key
        return Finding("Duo", State.FAILED, f"the saved secret key: {exc}")
    if not effective.configured:
        return Finding(
            "Duo", State.NOT_SET_UP, "no keys saved (Advanced Settings or `twofa duo set`)"
        )
    test = await gateway.console.test_connection()
    if not test.connected:
        problems = "; ".join(f"{field}: {why}" for field, why in test.problems.items())
        return Finding("Duo", State.FAILED, problems)
    return Finding(
        "Duo", State.OK, f"keys accepted; Duo's clock is {test.clock_skew_s:+.1f} s from ours"
    )


def duo_refusal_status(outcome: str, error: object) -> int | None:
    """The HTTP status of a `duo_error` audit record when it is Duo refusing twofa itself."""
    found = DUO_ANSWERED.search(error) if isinstance(error, str) else None
    status = int(found.group(1)) if found else None
    if status is None and len(outcome) == 5 and outcome.isdigit():
        status = int(outcome[:3])  # Duo's codes start with the HTTP status: 42901
    return status if status in DUO_REFUSALS else None


async def _duo_alerts(gateway: Gateway) -> Finding:
    """What an admin must look at now: in the last hour, a user reported a push as fraud, or
    Duo refused twofa's keys or rate-limited it. Reads the audit log only."""
    since = gateway.clock.now() - ALERT_WINDOW
    async with gateway.db.begin() as db:
        search = AuditSearch(db)
        frauds = await search.newest_first(
            AuditCriteria(kind=FATIGUE_KIND, outcome="paused", since=since),
            offset=0,
            limit=MOST_ALERTS_READ,
        )
        errors = await search.newest_first(
            AuditCriteria(kind="duo_error", since=since), offset=0, limit=MOST_ALERTS_READ
        )
    refusals = Counter(
        status
        for row in errors
        if (status := duo_refusal_status(row.outcome, row.detail.get("error"))) is not None
    )
    alerts = []
    if frauds:
        who = ", ".join(dict.fromkeys(row.username for row in frauds))
        alerts.append(f"{len(frauds)} fraud report{'s' if len(frauds) != 1 else ''} ({who})")
    alerts += [
        f"Duo {DUO_REFUSALS[status]} {count} time{'s' if count != 1 else ''} (HTTP {status})"
        for status, count in sorted(refusals.items())
    ]
    if alerts:
        return Finding(
            "Duo alerts", State.FAILED, f"in the last hour: {'; '.join(alerts)} (see the Audit Log)"
        )
    return Finding(
        "Duo alerts", State.OK, "no fraud report, refused key or rate limit in the last hour"
    )


async def _sign_in_attacks(gateway: Gateway) -> Finding:
    """Fails while, in the last hour, wrong passwords for a username from many networks passed
    the every-network limit, so its sign-ins are slowed. Reads the audit log only."""
    async with gateway.db.begin() as db:
        attacked = await attacked_usernames(db, gateway.clock.now())
    if not attacked:
        return Finding(
            "sign-in attacks", State.OK, "no distributed password attack in the last hour"
        )
    count = len(attacked)
    return Finding(
        "sign-in attacks",
        State.FAILED,
        f"in the last hour: {count} username{'s' if count != 1 else ''} under a distributed "
        f"password attack ({', '.join(attacked)}): their sign-ins are slowed, nobody is locked "
        "out (see the Audit Log)",
    )


async def _mail_server(gateway: Gateway) -> Finding:
    try:
        config = await gateway.smtp.check_login()
    except SmtpNotConfigured:
        return Finding("mail server", State.NOT_SET_UP, "none saved (E-mail Settings)")
    except SmtpProblem as exc:
        return Finding("mail server", State.FAILED, str(exc))
    signed_in = f", signed in as {config.username}" if config.username else ""
    return Finding(
        "mail server",
        State.OK,
        f"{config.host}:{config.port} answered ({config.security.value}{signed_in}); "
        "nothing was sent",
    )


async def _secret_keys(gateway: Gateway) -> Finding:
    """Warns while values are sealed by an older key (it must stay in `secret_key` until
    `twofa keys rotate` finishes); fails when some are sealed by a key no longer listed."""
    usage = await gateway.key_rotation.usage()
    if usage.unopenable:
        lost = ", ".join(usage.describe(label) for label in usage.unopenable)
        return Finding(
            "secret keys",
            State.FAILED,
            f"sealed values that no key in secret_key opens: {lost}; put the key that sealed "
            "them back (after the newest), then run `twofa keys rotate`",
        )
    if usage.stale:
        return Finding(
            "secret keys",
            State.WARNING,
            f"{usage.stale} of {usage.stale + usage.current} sealed values are not sealed by "
            f"the newest key ({usage.describe_stale()}): run `twofa keys rotate`, and keep "
            "the older keys until it finishes",
        )
    older = len(usage.key_ids) - 1
    unused = f"; the older keys ({older}) are unused and can be removed" if older else ""
    return Finding(
        "secret keys",
        State.OK,
        f"all {usage.current} sealed values use the newest key ({usage.key_ids[0]}){unused}",
    )


async def _clock(gateway: Gateway) -> Finding:
    """How far this node's clock is from the database server's, measured across one round
    trip (the node's reading taken half-way)."""
    before = gateway.clock.now()
    try:
        async with gateway.db() as db:
            theirs = await server_time(db)
    except (SQLAlchemyError, OSError):  # the database check says why
        return Finding("clock", State.NOT_CHECKED, "the database server does not answer")
    ours = before + (gateway.clock.now() - before) / 2
    skew = (ours - theirs).total_seconds()
    said = f"this node's clock is {skew:+.1f} s from the database server's"
    if abs(skew) <= CLOCK_WARN_S:
        return Finding("clock", State.OK, said)
    why = (
        "keep every node's clock and the database server's in sync (NTP): authenticator "
        "codes, session expiry and the session sweep read the nodes' clocks"
    )
    state = State.FAILED if abs(skew) > CLOCK_FAIL_S else State.WARNING
    return Finding("clock", state, f"{said}; {why}")


async def _change_feed(gateway: Gateway) -> Finding:
    """This process's feed (on the Status page: the serving process's), waited for a moment
    when it is still connecting."""
    feed, state = gateway.change_feed, gateway.feed_state
    if feed is None or state is None:
        return Finding(
            "change feed",
            State.NOT_SET_UP,
            "change_feed = none: each process reads every session in use again every second",
        )
    await feed.wait_live(FEED_WAIT_S)
    report = state.report()
    if not report.live:
        return Finding(
            "change feed",
            State.FAILED,
            f"{report.kind} feed not live ({report.problem}): forward-auth reads every session "
            "in use again every second until it is back (it reconnects by itself)",
        )
    where = f" on {gateway.settings.redis_channel}" if report.kind == "redis" else ""
    return Finding(
        "change feed",
        State.OK,
        f"{report.kind}{where}, live: sign-outs and revocations reach every process at once",
    )


def _directory_check(directory: ExternalDirectory) -> Callable[[], Awaitable[Finding]]:
    async def check() -> Finding:
        part = f"directory {directory.name}"
        try:
            await directory.groups_of(PROBE_USERNAME)
        except DirectoryUnavailable as exc:
            return Finding(part, State.FAILED, str(exc))
        return Finding(part, State.OK, "answers a user lookup")

    return check

"""`twofa doctor`: asks each part the gateway leans on whether it answers, one by one, so an
admin sees in one place what is wrong before users do: the database schema, Duo's keys, the
mail server, Redis and each external directory. Nothing is changed, sent or audited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from twofa.directories.base import DirectoryUnavailable, ExternalDirectory
from twofa.services.email_delivery import SmtpNotConfigured, SmtpProblem
from twofa.services.runtime import Gateway
from twofa.storage.database import schema_status

# A name no directory holds: "no such user" proves the service account binds and searches.
PROBE_USERNAME: Final = "twofa-doctor-probe-0"
REDIS_TIMEOUT_S: Final = 3.0
# Each check has its own timeouts; this bounds one that has none in some library's path.
CHECK_DEADLINE_S: Final = 30.0


class State(Enum):
    OK = "ok"
    FAILED = "FAILED"
    NOT_SET_UP = "not set up"
    NOT_CHECKED = "not checked"  # it reads its settings from a database that is not ready


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
        ("mail server", lambda: _mail_server(gateway)),
    ]
    independent: list[tuple[str, Callable[[], Awaitable[Finding]]]] = [
        ("Redis", lambda: _redis(gateway)),
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
    if not (await gateway.console.effective_duo()).configured:
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


async def _redis(gateway: Gateway) -> Finding:
    if gateway.settings.redis_url is None:
        return Finding("Redis", State.NOT_SET_UP, "no redis_url: caches follow within a second")
    client = Redis.from_url(
        gateway.settings.redis_url.get_secret_value(),
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return Finding("Redis", State.FAILED, f"no answer to PING: {exc}")
    finally:
        await client.aclose()
    return Finding(
        "Redis", State.OK, f"answers PING; changes go out on {gateway.settings.redis_channel}"
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

"""Every decision is written to the audit log in the same transaction as the change it records,
and to the application log (failmode decisions at WARNING, so they are seen)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.clock import Clock
from twofa.domain.client import NO_CLIENT, ClientInfo
from twofa.storage.audit_log import AuditLog, AuditValues

log = logging.getLogger("twofa.audit")
# `sign_in_attack`: a username's sign-ins slowed by a distributed password attack.
_LOUD_KINDS = frozenset({"failmode", "duo_error", "lockout", "sign_in_attack"})


def record(
    db: AsyncSession,
    clock: Clock,
    kind: str,
    outcome: str,
    *,
    username: str = "",
    client: ClientInfo = NO_CLIENT,
    **detail: Any,
) -> None:
    AuditLog(db).add(
        AuditValues(
            at=clock.now(),
            kind=kind,
            outcome=outcome,
            username=username,
            client_ip=client.ip,
            user_agent=client.user_agent[:300],
            detail=detail,
        )
    )
    announce(kind, outcome, username, client, detail)


def announce(kind: str, outcome: str, username: str, client: ClientInfo, detail: Any) -> None:
    """The application log's line for an audit record written by `record`."""
    level = logging.WARNING if kind in _LOUD_KINDS else logging.INFO
    fields = {
        "kind": kind,
        "outcome": outcome,
        "username": username,
        "client_ip": client.ip,
        "user_agent": client.user_agent[:300],
        "detail": detail,
    }  # the audit record's own, for a JSON log line (cli.logging_setup)
    log.log(
        level,
        "%s %s user=%s ip=%s %s",
        kind,
        outcome,
        username,
        client.ip,
        detail,
        extra={"audit": fields},
    )

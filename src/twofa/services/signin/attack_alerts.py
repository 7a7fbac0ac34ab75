"""Usernames under a distributed password attack: the sign-in (services.signin.login) records
one `sign_in_attack`/`slowed` audit event when wrong passwords for a name from every network
together pass their limit and further attempts start to wait; the Overview page, the Status
page and `twofa doctor` read them back from the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.storage.audit_log import AuditCriteria, AuditSearch

ATTACK_KIND: Final = "sign_in_attack"
ATTACK_OUTCOME: Final = "slowed"
ALERT_WINDOW: Final = timedelta(hours=1)
MOST_ALERTS_READ: Final = 1000


async def attacked_usernames(db: AsyncSession, now: datetime) -> list[str]:
    """The usernames whose sign-ins were slowed by a distributed attack in the last hour,
    the most recent first."""
    criteria = AuditCriteria(kind=ATTACK_KIND, outcome=ATTACK_OUTCOME, since=now - ALERT_WINDOW)
    rows = await AuditSearch(db).newest_first(criteria, offset=0, limit=MOST_ALERTS_READ)
    return list(dict.fromkeys(row.username for row in rows))

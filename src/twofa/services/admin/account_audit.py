"""The audit record of an account change, naming who made it (`cli`, an admin, a token):
shared by the account actions and the CSV import."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.state import audit


def account_audit(
    db: AsyncSession,
    clock: Clock,
    actor: str,
    kind: str,
    username: str,
    client: ClientInfo,
    **detail: object,
) -> None:
    audit.record(db, clock, kind, "ok", username=username, client=client, actor=actor, **detail)

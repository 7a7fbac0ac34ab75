"""Second-factor outcomes in the metrics (`twofa_second_factor_total` by method and outcome),
counted where they are audited and only as they are: when the audit record's transaction
commits. An answer that lost a race rolls back whole and is audited again as refused; it
must not count as an allow as well."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.telemetry import SECOND_FACTOR_OUTCOMES


def count_when_committed(db: AsyncSession, method: str, outcome: str) -> None:
    """Counts `outcome` for `method` once `db`'s transaction commits; never if it rolls back.
    `method` and `outcome` come from the code (a method code, an audit outcome), never from
    a request: each pair is a series of its own."""
    counter = SECOND_FACTOR_OUTCOMES.labels(method, outcome)

    def committed(_session: object) -> None:
        counter.inc()

    event.listen(db.sync_session, "after_commit", committed, once=True)

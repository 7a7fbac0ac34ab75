"""Loads a user's credentials for a method (secrets opened) and stores what methods return:
new credentials (secrets sealed, items hashed by the method) and verified state changes,
each change applied at most once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from twofa.errors import Conflict
from twofa.methods.base import NewCredential, StoredCredential, StoredItem, Verified
from twofa.security.sealing import Sealer
from twofa.storage.credentials import CredentialItems, Credentials
from twofa.storage.tables import CredentialItemRow, CredentialRow

SECRET_PURPOSE: Final = "credential.secret"  # noqa: S105 (an AAD label, not a secret)


class DuplicateCredential(Conflict):
    """A new credential carries a `unique_id` another credential of its method has. The
    transaction that tried to store it is rolled back whole."""

    def __init__(self, method: str) -> None:
        super().__init__(f"a {method} credential with this id is registered already")


def keeps_items(method: object) -> bool:
    """Whether a method stores single-use items (backup codes, hashed answers). A method
    says `keeps_items = False` to spare every verification the items query; one that says
    nothing is assumed to keep some."""
    return bool(getattr(method, "keeps_items", True))


async def load(
    db: AsyncSession, sealer: Sealer, user_id: int, method: str, *, with_items: bool = True
) -> list[StoredCredential]:
    rows = await Credentials(db).to_check(user_id, method)
    items = await CredentialItems(db).of_credentials([row.id for row in rows]) if with_items else ()
    by_credential: dict[int, list[StoredItem]] = {}
    for item in items:
        by_credential.setdefault(item.credential_id, []).append(
            StoredItem(item.id, item.slot, item.digest, item.used_at is not None)
        )
    return [
        StoredCredential(
            id=row.id,
            label=row.label,
            secret=sealer.open(row.secret_sealed, secret_purpose(row.id))
            if row.secret_sealed
            else None,
            state=dict(row.state or {}),
            version=row.version,
            items=tuple(by_credential.get(row.id, ())),
        )
        for row in rows
    ]


def secret_purpose(credential_id: int) -> str:
    """The sealed secret is bound to its row: copied into another row it does not open."""
    return f"{SECRET_PURPOSE}:{credential_id}"


async def store(
    db: AsyncSession,
    sealer: Sealer,
    user_id: int,
    method: str,
    credential: NewCredential,
    now: datetime,
) -> int:
    row = CredentialRow(
        user_id=user_id,
        method=method,
        label=credential.label[:100],
        state=dict(credential.state),
        version=1,
        created_at=now,
        unique_id=credential.unique_id,
    )
    repo = Credentials(db)
    repo.add(row)
    try:
        await repo.flush()  # the id seals the secret to this row
    except IntegrityError as exc:
        if credential.unique_id is None:
            raise
        raise DuplicateCredential(method) from exc
    if credential.secret is not None:
        row.secret_sealed = sealer.seal(credential.secret, secret_purpose(row.id))
    items = CredentialItems(db)
    for item in credential.items:
        items.add(CredentialItemRow(credential_id=row.id, slot=item.slot, digest=item.digest))
    return row.id


async def apply(
    db: AsyncSession, verified: Verified, credentials: Sequence[StoredCredential], now: datetime
) -> bool:
    """Applies a verification's changes; False when a racing verification got there first
    (the item was already used, or the credential changed since it was read)."""
    credential = next((c for c in credentials if c.id == verified.credential_id), None)
    if credential is None:
        return False
    if verified.use_item is not None:
        if verified.use_item not in {item.id for item in credential.items}:
            return False
        if not await CredentialItems(db).use(verified.use_item, now):
            return False
    if verified.state is not None:
        return await Credentials(db).apply_state(
            credential.id, credential.version, dict(verified.state), now
        )
    await Credentials(db).touch(credential.id, now)
    return True

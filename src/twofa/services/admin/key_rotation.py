"""Retiring a secret key (`twofa keys rotate`, `twofa keys status`, a `twofa doctor` line):
every sealed value not sealed by the newest key is opened and sealed again, a batch of rows a
transaction. A row is rewritten only if it is still as read, so a value a running gateway saves
meanwhile is never overwritten with an older one. Each batch is committed on its own: a run
that stops half way keeps what it did, and running it again finishes the rest; nothing is ever
lost, since a value is replaced only by the same secret sealed again.

Only sealing uses the secret key. Sessions, CSRF tokens, remembered devices and API tokens are
random tokens kept as hashes, so a key change signs nobody out and needs nothing for them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import NO_CLIENT, ClientInfo
from twofa.security.sealing import V1_PREFIX, Sealer, SealError, head_of_key, key_id_of
from twofa.services.admin.sealed_places import (
    OIDC_SIGNING_KEYS,
    SAML_SIGNING_KEYS,
    ChallengeSecretsPlace,
    CredentialSecretsPlace,
    SealedHolder,
    SealedPlace,
    SettingSecretsPlace,
)
from twofa.services.state import audit

DEFAULT_BATCH_SIZE: Final = 200
V1_LABEL: Final = "v1"  # sealed before key ids: which key sealed it shows only on opening
UNRECOGNISED_LABEL: Final = "unrecognised"
AUDIT_KIND: Final = "secret_key_rotation"


def label_of(sealed_head: str) -> str:
    """The key id a value (or its head) names, "v1", or "unrecognised"."""
    kid = key_id_of(sealed_head)
    if kid is not None:
        return kid
    return V1_LABEL if sealed_head.startswith(V1_PREFIX) else UNRECOGNISED_LABEL


@dataclass(frozen=True)
class KeyUsage:
    """How many sealed values each key holds: `counts[label][place]`, a label being a key
    id, "v1" or "unrecognised"; `key_ids` are the listed keys, newest first."""

    key_ids: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]

    def total(self, label: str) -> int:
        return sum(self.counts.get(label, {}).values())

    @property
    def current(self) -> int:
        return self.total(self.key_ids[0])

    @property
    def stale(self) -> int:
        """Values a rotation still has to seal again (or cannot open)."""
        return sum(self.total(label) for label in self.counts if label != self.key_ids[0])

    @property
    def unopenable(self) -> dict[str, int]:
        """Values named by a key that is not listed: nothing here can open them."""
        return {
            label: self.total(label)
            for label in self.counts
            if label not in self.key_ids and label != V1_LABEL and self.total(label)
        }

    @property
    def older_keys_unused(self) -> bool:
        """Nothing still needs a key other than the newest: older ones may be removed."""
        return self.stale == 0

    def describe(self, label: str) -> str:
        """What the values of one label are, in an admin's words."""
        count = self.total(label)
        if label == self.key_ids[0]:
            return f"{count} by the newest key {label}"
        if label in self.key_ids:
            return f"{count} by the older key {label}"
        if label == V1_LABEL:
            return f"{count} in the v1 format (sealed before key ids)"
        if label == UNRECOGNISED_LABEL:
            return f"{count} in no known format"
        return f"{count} by the key {label}, which is not in secret_key"

    def describe_stale(self) -> str:
        return ", ".join(
            self.describe(label)
            for label in self.counts
            if label != self.key_ids[0] and self.total(label)
        )


@dataclass(frozen=True)
class RotationProgress:
    """Reported after each committed batch."""

    place: str
    batches: int
    resealed: int
    changed_meanwhile: int
    unreadable: int


@dataclass(frozen=True)
class RotationResult:
    resealed: int
    changed_meanwhile: int
    unreadable: tuple[str, ...]  # where, and why it did not open
    after: KeyUsage

    @property
    def finished(self) -> bool:
        return self.after.older_keys_unused


@dataclass
class _Tally:
    place: str = ""
    batches: int = 0
    resealed: int = 0
    changed_meanwhile: int = 0
    unreadable: list[str] = field(default_factory=list)

    def progress(self) -> RotationProgress:
        return RotationProgress(
            self.place, self.batches, self.resealed, self.changed_meanwhile, len(self.unreadable)
        )


def default_places() -> tuple[SealedPlace, ...]:
    return (
        CredentialSecretsPlace(),
        SettingSecretsPlace(),
        ChallengeSecretsPlace(),
        OIDC_SIGNING_KEYS,
        SAML_SIGNING_KEYS,
    )


class KeyRotationService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        sealer: Sealer,
        places: Sequence[SealedPlace] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._sealer = sealer
        self._places = tuple(places) if places is not None else default_places()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._sealer.key_ids

    async def usage(self) -> KeyUsage:
        """Counts sealed values by key; reads heads only, opens nothing."""
        counts: dict[str, Counter[str]] = {}
        now = self._clock.now()
        for place in self._places:
            for head, count in (await place.heads(self._db, now)).items():
                counts.setdefault(label_of(head), Counter())[place.title] += count
        return KeyUsage(self._sealer.key_ids, counts)

    async def rotate(
        self,
        *,
        actor: str,
        client: ClientInfo = NO_CLIENT,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Callable[[RotationProgress], None] | None = None,
    ) -> RotationResult:
        """Seals again every value the newest key did not seal, `batch_size` rows a
        transaction; `progress` hears of each committed batch."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        who = (actor, client)
        await self._audit(who, "started", newest_key=self._sealer.newest_key_id)
        tally = _Tally()
        for place in self._places:
            tally.place = place.title
            current = head_of_key(self._sealer.newest_key_id)
            async for holders in place.holders(self._db, batch_size, self._clock.now(), current):
                await self._reseal_batch(place, holders, tally)
                tally.batches += 1
                if progress is not None:
                    progress(tally.progress())
        after = await self.usage()
        result = RotationResult(
            tally.resealed, tally.changed_meanwhile, tuple(tally.unreadable), after
        )
        await self._audit(
            who,
            "finished" if result.finished else "incomplete",
            newest_key=self._sealer.newest_key_id,
            resealed=result.resealed,
            changed_meanwhile=result.changed_meanwhile,
            unreadable=len(result.unreadable),
            still_stale=after.stale,
        )
        return result

    async def _reseal_batch(
        self, place: SealedPlace, holders: Sequence[SealedHolder], tally: _Tally
    ) -> None:
        """Opens and seals outside the transaction (AES, but still), then writes the batch
        in one transaction, each row only if it is as read."""
        planned: list[tuple[SealedHolder, dict[str, str]]] = []
        for holder in holders:
            stale = [f for f in holder.fields if not self._sealer.is_current(f.sealed)]
            if not stale:
                continue
            try:
                resealed = {
                    f.name: self._sealer.seal(self._sealer.open(f.sealed, f.purpose), f.purpose)
                    for f in stale
                }
            except SealError as exc:
                tally.unreadable.append(f"{holder.where}: {exc}")
                continue
            planned.append((holder, resealed))
        if not planned:
            return
        async with self._db.begin() as db:
            for holder, resealed in planned:
                if await place.rewrite(db, holder, resealed):
                    tally.resealed += len(resealed)
                else:
                    tally.changed_meanwhile += 1

    async def _audit(self, who: tuple[str, ClientInfo], outcome: str, **detail: object) -> None:
        actor, client = who
        async with self._db.begin() as db:
            audit.record(
                db, self._clock, AUDIT_KIND, outcome, username=actor, client=client, **detail
            )

"""Authentication transactions and their long-poll.

A transaction moves through Duo's status words (pushed or calling, then allow, deny, fraud or
timeout). Nothing runs in the background per transaction: a timeout is noticed when someone
looks, and waiters sleep on an event that is set at each change, so ten thousand pending
pushes cost ten thousand small objects and no timers.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from twofa.duo.models import Factor, TransactionStatus

STATUS_MESSAGES: Final = {
    TransactionStatus.PUSHED: "Pushed a login request to your device...",
    TransactionStatus.CALLING: "Calling your phone...",
    TransactionStatus.ANSWERED: "Answered. Press any key on your phone to log in.",
    TransactionStatus.ALLOW: "Success. Logging you in...",
    TransactionStatus.DENY: "Login request denied.",
    TransactionStatus.FRAUD: "Login request reported as fraudulent.",
    TransactionStatus.TIMEOUT: "Login timed out.",
    TransactionStatus.SENT: "New SMS passcodes sent.",
    TransactionStatus.BYPASS: "Using bypass code.",
}


@dataclass(frozen=True)
class PushContext:
    """What the phone shows beside a push: title, the name to display, key/value context."""

    type: str | None = None
    display_username: str | None = None
    pushinfo: tuple[tuple[str, str], ...] = ()
    ipaddr: str | None = None


@dataclass
class Transaction:
    txid: str
    username: str
    factor: Factor
    device: str | None
    status: TransactionStatus
    created_at: float
    expires_at: float
    type: str | None = None
    display_username: str | None = None
    pushinfo: dict[str, str] = field(default_factory=dict)
    ipaddr: str | None = None
    trusted_device_token: str | None = None
    status_msg_override: str | None = None
    version: int = 0
    reported_version: int = -1
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status_msg(self) -> str:
        return self.status_msg_override or STATUS_MESSAGES.get(self.status, self.status.value)

    def outcome_json(self) -> dict[str, object]:
        answer: dict[str, object] = {
            "result": self.status.result.value,
            "status": self.status.value,
            "status_msg": self.status_msg,
        }
        if self.trusted_device_token:
            answer["trusted_device_token"] = self.trusted_device_token
        return answer

    def to_json(self) -> dict[str, object]:
        return {
            "txid": self.txid,
            "username": self.username,
            "factor": self.factor.value,
            "status": self.status.value,
            "device": self.device,
            "type": self.type,
            "display_username": self.display_username,
            "pushinfo": self.pushinfo,
            "ipaddr": self.ipaddr,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


class TransactionBook:
    """Every transaction by txid; the only place their status changes."""

    def __init__(
        self,
        clock: Callable[[], float],
        push_timeout_s: float,
        on_allow: Callable[[Transaction], None] = lambda transaction: None,
    ) -> None:
        self._clock = clock
        self.push_timeout_s = push_timeout_s
        self._on_allow = on_allow
        self._by_txid: dict[str, Transaction] = {}

    def clear(self) -> None:
        self._by_txid.clear()

    def open(
        self,
        username: str,
        factor: Factor,
        status: TransactionStatus,
        *,
        device: str | None = None,
        push: PushContext | None = None,
    ) -> Transaction:
        now = self._clock()
        push = push or PushContext()
        transaction = Transaction(
            txid=str(uuid.uuid4()),
            username=username,
            factor=factor,
            device=device,
            status=status,
            created_at=now,
            expires_at=now + self.push_timeout_s,
            type=push.type,
            display_username=push.display_username,
            pushinfo=dict(push.pushinfo),
            ipaddr=push.ipaddr,
        )
        self._by_txid[transaction.txid] = transaction
        return transaction

    def get(self, txid: str) -> Transaction | None:
        transaction = self._by_txid.get(txid)
        if transaction is not None:
            self._expire_if_due(transaction)
        return transaction

    def listing(self, username: str | None, status: TransactionStatus | None) -> list[Transaction]:
        found = []
        for transaction in self._by_txid.values():
            self._expire_if_due(transaction)
            if username not in (None, transaction.username):
                continue
            if status is not None and transaction.status is not status:
                continue
            found.append(transaction)
        return sorted(found, key=lambda t: t.created_at)

    def settle(self, transaction: Transaction, status: TransactionStatus) -> bool:
        """Moves a pending transaction to `status`; False when it had already ended."""
        self._expire_if_due(transaction)
        if transaction.status.is_final:
            return False
        self._change(transaction, status)
        if status is TransactionStatus.ALLOW:
            transaction.trusted_device_token = secrets.token_urlsafe(24)
            self._on_allow(transaction)
        return True

    async def next_change(self, transaction: Transaction, hold_s: float) -> Transaction:
        """Answers at once with news the caller has not seen, else waits for a change or the
        hold time (never past the push's own timeout)."""
        self._expire_if_due(transaction)
        if transaction.version == transaction.reported_version and not transaction.status.is_final:
            wait = min(hold_s, max(0.0, transaction.expires_at - self._clock()))
            try:
                await asyncio.wait_for(transaction.changed.wait(), timeout=wait)
            except TimeoutError:
                self._expire_if_due(transaction)
        transaction.reported_version = transaction.version
        return transaction

    async def until_final(self, transaction: Transaction) -> Transaction:
        """For synchronous `auth`: waits until the transaction ends (at the latest, timeout)."""
        while not transaction.status.is_final:
            await self.next_change(transaction, hold_s=self.push_timeout_s)
        return transaction

    def _expire_if_due(self, transaction: Transaction) -> None:
        if not transaction.status.is_final and self._clock() >= transaction.expires_at:
            self._change(transaction, TransactionStatus.TIMEOUT)

    @staticmethod
    def _change(transaction: Transaction, status: TransactionStatus) -> None:
        transaction.status = status
        transaction.version += 1
        waiters = transaction.changed
        transaction.changed = asyncio.Event()
        waiters.set()

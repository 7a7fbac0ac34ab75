"""TransactionBook: status changes, lazy timeouts and the auth_status long-poll."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from twofa.duo.models import AuthResult, Factor, TransactionStatus
from twofa.simulator.transactions import (
    STATUS_MESSAGES,
    PushContext,
    Transaction,
    TransactionBook,
)

PUSH_TIMEOUT_S = 60.0
SAFETY_S = 5.0  # only guards against a hung test; never a pass/fail threshold
FINAL_ACTIONS = [
    TransactionStatus.ALLOW,
    TransactionStatus.DENY,
    TransactionStatus.FRAUD,
    TransactionStatus.TIMEOUT,
]


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_book(clock: FakeClock) -> tuple[TransactionBook, list[Transaction]]:
    allowed: list[Transaction] = []
    return TransactionBook(clock, PUSH_TIMEOUT_S, on_allow=allowed.append), allowed


def push(book: TransactionBook, username: str = "alice") -> Transaction:
    context = PushContext(type="Login", display_username="Alice", pushinfo=(("app", "wiki"),))
    return book.open(username, Factor.PUSH, TransactionStatus.PUSHED, device="DP1", push=context)


async def let_tasks_run() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_open_is_pushed_and_waiting() -> None:
    clock = FakeClock()
    book, _ = make_book(clock)
    transaction = push(book)
    assert transaction.status is TransactionStatus.PUSHED
    assert transaction.created_at == clock.now
    assert transaction.expires_at == clock.now + PUSH_TIMEOUT_S
    assert book.get(transaction.txid) is transaction
    assert transaction.outcome_json() == {
        "result": "waiting",
        "status": "pushed",
        "status_msg": STATUS_MESSAGES[TransactionStatus.PUSHED],
    }
    assert transaction.to_json()["pushinfo"] == {"app": "wiki"}
    assert transaction.to_json()["display_username"] == "Alice"


def test_every_open_gets_its_own_txid() -> None:
    book, _ = make_book(FakeClock())
    assert push(book).txid != push(book).txid


@pytest.mark.parametrize("status", FINAL_ACTIONS)
def test_settle_ends_the_transaction_once(status: TransactionStatus) -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    assert book.settle(transaction, status) is True
    assert transaction.status is status
    assert transaction.status.is_final
    other = TransactionStatus.DENY if status is TransactionStatus.ALLOW else TransactionStatus.ALLOW
    assert book.settle(transaction, other) is False
    assert transaction.status is status


def test_allow_issues_a_trusted_device_token_and_reports_it() -> None:
    book, allowed = make_book(FakeClock())
    transaction = push(book)
    book.settle(transaction, TransactionStatus.ALLOW)
    assert transaction.trusted_device_token
    assert allowed == [transaction]
    outcome = transaction.outcome_json()
    assert outcome["trusted_device_token"] == transaction.trusted_device_token
    assert outcome["result"] == "allow"


def test_deny_issues_no_token() -> None:
    book, allowed = make_book(FakeClock())
    transaction = push(book)
    book.settle(transaction, TransactionStatus.DENY)
    assert transaction.trusted_device_token is None
    assert "trusted_device_token" not in transaction.outcome_json()
    assert allowed == []


def test_expiry_is_noticed_by_get() -> None:
    clock = FakeClock()
    book, _ = make_book(clock)
    transaction = push(book)
    clock.now += PUSH_TIMEOUT_S - 1
    assert book.get(transaction.txid) is transaction
    assert transaction.status is TransactionStatus.PUSHED
    clock.now += 1
    assert book.get(transaction.txid) is transaction
    assert transaction.status is TransactionStatus.TIMEOUT
    assert book.settle(transaction, TransactionStatus.ALLOW) is False


def test_expiry_is_noticed_by_listing() -> None:
    clock = FakeClock()
    book, _ = make_book(clock)
    transaction = push(book)
    clock.now += PUSH_TIMEOUT_S + 1
    assert book.listing(None, TransactionStatus.PUSHED) == []
    assert book.listing(None, TransactionStatus.TIMEOUT) == [transaction]


def test_get_unknown_txid_is_none() -> None:
    book, _ = make_book(FakeClock())
    assert book.get("no-such-txid") is None


def test_listing_filters_by_username_and_status_in_creation_order() -> None:
    clock = FakeClock()
    book, _ = make_book(clock)
    first = push(book, "alice")
    clock.now += 1
    bob = push(book, "bob")
    clock.now += 1
    second = push(book, "alice")
    book.settle(second, TransactionStatus.DENY)
    assert book.listing("alice", None) == [first, second]
    assert book.listing("bob", None) == [bob]
    assert book.listing(None, TransactionStatus.PUSHED) == [first, bob]
    assert book.listing("alice", TransactionStatus.DENY) == [second]
    assert book.listing("carol", None) == []


def test_clear_forgets_everything() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    book.clear()
    assert book.get(transaction.txid) is None
    assert book.listing(None, None) == []


async def test_next_change_answers_at_once_with_unreported_news() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    poll = asyncio.create_task(book.next_change(transaction, hold_s=600))
    await asyncio.sleep(0)
    assert poll.done()
    assert poll.result().status is TransactionStatus.PUSHED


async def test_next_change_holds_when_nothing_is_new() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    await book.next_change(transaction, hold_s=600)
    answered = await asyncio.wait_for(book.next_change(transaction, hold_s=0.05), SAFETY_S)
    assert answered.status is TransactionStatus.PUSHED
    poll = asyncio.create_task(book.next_change(transaction, hold_s=600))
    await let_tasks_run()
    assert not poll.done()
    poll.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poll
    assert poll.cancelled()


async def test_settle_from_another_task_wakes_the_waiter() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    await book.next_change(transaction, hold_s=600)
    waiter = asyncio.create_task(book.next_change(transaction, hold_s=600))
    await let_tasks_run()
    assert not waiter.done()

    async def approve() -> bool:
        return book.settle(transaction, TransactionStatus.ALLOW)

    assert await asyncio.create_task(approve())
    seen = await asyncio.wait_for(waiter, SAFETY_S)
    assert seen.status is TransactionStatus.ALLOW
    assert seen.outcome_json()["result"] == "allow"


async def test_final_status_already_reported_is_answered_at_once() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    book.settle(transaction, TransactionStatus.DENY)
    await book.next_change(transaction, hold_s=600)
    poll = asyncio.create_task(book.next_change(transaction, hold_s=600))
    await asyncio.sleep(0)
    assert poll.done()
    assert poll.result().status is TransactionStatus.DENY


async def test_next_change_reports_expiry_after_the_hold() -> None:
    clock = FakeClock()
    book, _ = make_book(clock)
    transaction = push(book)
    await book.next_change(transaction, hold_s=600)
    poll = asyncio.create_task(book.next_change(transaction, hold_s=0.05))
    await let_tasks_run()
    clock.now += PUSH_TIMEOUT_S
    seen = await asyncio.wait_for(poll, SAFETY_S)
    assert seen.status is TransactionStatus.TIMEOUT


async def test_hold_never_outlasts_the_push_timeout() -> None:
    book = TransactionBook(time.monotonic, push_timeout_s=0.05)
    transaction = book.open("alice", Factor.PUSH, TransactionStatus.PUSHED)
    await book.next_change(transaction, hold_s=600)
    seen = await asyncio.wait_for(book.next_change(transaction, hold_s=600), SAFETY_S)
    assert seen.status is TransactionStatus.TIMEOUT


async def test_until_final_returns_once_settled() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    waiter = asyncio.create_task(book.until_final(transaction))
    await let_tasks_run()
    assert not waiter.done()
    book.settle(transaction, TransactionStatus.FRAUD)
    seen = await asyncio.wait_for(waiter, SAFETY_S)
    assert seen.status is TransactionStatus.FRAUD


async def test_until_final_returns_at_once_for_an_ended_transaction() -> None:
    book, _ = make_book(FakeClock())
    transaction = book.open("alice", Factor.SMS, TransactionStatus.PUSHED)
    book.settle(transaction, TransactionStatus.SENT)
    seen = await asyncio.wait_for(book.until_final(transaction), SAFETY_S)
    assert seen.status is TransactionStatus.SENT


@pytest.mark.parametrize("status", list(TransactionStatus))
def test_outcome_json_words(status: TransactionStatus) -> None:
    book, _ = make_book(FakeClock())
    transaction = book.open("alice", Factor.PUSH, status)
    outcome = transaction.outcome_json()
    assert outcome["result"] == status.result.value
    assert outcome["status"] == status.value
    assert outcome["status_msg"] == STATUS_MESSAGES.get(status, status.value)
    assert outcome["status_msg"]


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (TransactionStatus.PUSHED, AuthResult.WAITING),
        (TransactionStatus.CALLING, AuthResult.WAITING),
        (TransactionStatus.ALLOW, AuthResult.ALLOW),
        (TransactionStatus.BYPASS, AuthResult.ALLOW),
        (TransactionStatus.DENY, AuthResult.DENY),
        (TransactionStatus.FRAUD, AuthResult.DENY),
        (TransactionStatus.TIMEOUT, AuthResult.DENY),
        (TransactionStatus.SENT, AuthResult.DENY),
    ],
)
def test_result_word_for_status(status: TransactionStatus, result: AuthResult) -> None:
    assert status.result is result


def test_status_msg_override_wins() -> None:
    book, _ = make_book(FakeClock())
    transaction = push(book)
    transaction.status_msg_override = "Incorrect passcode. Please try again."
    book.settle(transaction, TransactionStatus.DENY)
    assert transaction.outcome_json()["status_msg"] == "Incorrect passcode. Please try again."

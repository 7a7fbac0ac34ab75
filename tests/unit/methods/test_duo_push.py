"""Duo Push as an out-of-band method: what Duo's answers mean, and that it is registered with
the other methods, verified by its provider, not by the pages of the local ones."""

from __future__ import annotations

import pytest

from twofa.config import load_settings
from twofa.duo.models import AuthOutcome, AuthResult, TransactionStatus
from twofa.methods.base import MethodKind, OutOfBandAnswer
from twofa.methods.duo_push import DuoNotConfigured, DuoPushMethod, answer_of
from twofa.methods.registry import DUO_PUSH, LOCAL_METHOD_CODES, UnknownMethod
from twofa.security.hashing_pool import HashingPool
from twofa.security.passwords import PasswordHashing
from twofa.services.runtime import build_registry


def outcome(result: AuthResult, status: TransactionStatus) -> AuthOutcome:
    return AuthOutcome(result=result, status=status, status_msg="")


@pytest.mark.parametrize(
    ("result", "status", "answer"),
    [
        (AuthResult.WAITING, TransactionStatus.PUSHED, OutOfBandAnswer.PENDING),
        (AuthResult.WAITING, TransactionStatus.CALLING, OutOfBandAnswer.PENDING),
        (AuthResult.WAITING, TransactionStatus.ANSWERED, OutOfBandAnswer.PENDING),
        (AuthResult.ALLOW, TransactionStatus.ALLOW, OutOfBandAnswer.ALLOW),
        (AuthResult.DENY, TransactionStatus.DENY, OutOfBandAnswer.DENY),
        (AuthResult.DENY, TransactionStatus.FRAUD, OutOfBandAnswer.FRAUD),
        (AuthResult.DENY, TransactionStatus.TIMEOUT, OutOfBandAnswer.TIMEOUT),
        (AuthResult.DENY, TransactionStatus.LOCKED_OUT, OutOfBandAnswer.DENY),
    ],
)
def test_duos_answers_end_pushes_and_calls_alike(
    result: AuthResult, status: TransactionStatus, answer: OutOfBandAnswer
) -> None:
    assert answer_of(outcome(result, status)) is answer


def test_duos_bypass_answer_is_waived_not_allowed() -> None:
    """Duo lets a user in bypass status through whatever was typed or tapped: no factor."""
    assert answer_of(outcome(AuthResult.ALLOW, TransactionStatus.BYPASS)) is OutOfBandAnswer.WAIVED


def test_duo_push_is_registered_as_an_out_of_band_method() -> None:
    registry = build_registry(
        load_settings(environ={}, mode="dev"), hashing=HashingPool(PasswordHashing())
    )
    duo = registry.get(DUO_PUSH)
    assert (duo.kind, duo.title) == (MethodKind.OUT_OF_BAND, "Duo Push")
    assert registry.out_of_band(DUO_PUSH) is duo
    assert registry.codes == (DUO_PUSH, *LOCAL_METHOD_CODES)
    with pytest.raises(UnknownMethod):
        registry.local(DUO_PUSH)  # the local methods' pages cannot run it


async def test_a_duo_push_method_without_keys_says_so() -> None:
    with pytest.raises(DuoNotConfigured):
        await DuoPushMethod().poll("txid")

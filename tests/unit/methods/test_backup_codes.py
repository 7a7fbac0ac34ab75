"""Backup codes as a method: generation (entropy, alphabet, format), what is stored (hashes
only), typing forgiveness, and single use (a used or made-up code is refused)."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

import pytest

from tests.support.authenticator_backup_codes import made_up_code
from tests.support.hashing import counting_jobs, pool_full
from tests.unit.methods.threads import in_thread_log
from twofa.methods import backup_codes
from twofa.methods.backup_codes import (
    ALPHABET,
    BITS_PER_CODE,
    CODE_COUNT,
    BackupCodesMethod,
    is_well_formed,
    new_code,
    normalise_backup_code,
)
from twofa.methods.base import (
    Draft,
    EnrolmentRefused,
    MethodContext,
    MethodUser,
    NewCredential,
    ResponseRejected,
    StoredCredential,
    StoredItem,
)
from twofa.security.code_hashing import hash_code, verify_code
from twofa.security.hashing_pool import HashingBusy, HashingPool
from twofa.security.passwords import PasswordHashing

CONTEXT = MethodContext(
    MethodUser(1, "alice", "Alice", "alice@example.com"), datetime(2026, 11, 28, tzinfo=UTC)
)
METHOD = BackupCodesMethod(HashingPool(PasswordHashing()))


def stored(credential: NewCredential, used: frozenset[int] = frozenset()) -> StoredCredential:
    items = tuple(
        StoredItem(id=100 + n, slot=item.slot, digest=item.digest, used=100 + n in used)
        for n, item in enumerate(credential.items)
    )
    return StoredCredential(7, credential.label, None, {}, 1, items)


async def enrolled(method: BackupCodesMethod = METHOD) -> tuple[Draft, NewCredential]:
    draft = await method.begin_enrolment(CONTEXT)
    credential = await method.finish_enrolment(CONTEXT, draft.keep, draft.secret, {"saved": "on"})
    return draft, credential


def test_alphabet_is_crockford_base32_without_look_alikes() -> None:
    assert len(ALPHABET) == 32 == len(set(ALPHABET))
    assert not set("ILOU") & set(ALPHABET)
    assert BITS_PER_CODE == 50 >= 40
    assert math.log2(len(ALPHABET)) * len(new_code()) == BITS_PER_CODE


def test_generated_codes_are_distinct_and_use_the_whole_alphabet() -> None:
    codes = [new_code() for _ in range(2000)]
    assert len(set(codes)) == len(codes)
    assert set("".join(codes)) == set(ALPHABET)  # 20000 draws: every character shows up


async def test_enrolment_shows_ten_codes_as_two_groups_of_five() -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)

    codes = draft.show["codes"]
    assert len(codes) == CODE_COUNT == len(set(codes))
    for code in codes:
        assert len(code) == 11
        assert code[5] == "-"
        assert is_well_formed(code.replace("-", ""))
    assert draft.secret == "\n".join(codes)  # what the download serves


async def test_only_hashes_are_kept_and_stored_never_the_codes() -> None:
    draft, credential = await enrolled()
    shown = list(draft.show["codes"])
    codes = [code.replace("-", "") for code in shown]

    digests = [item.digest for item in credential.items]
    assert digests == draft.keep["digests"]
    assert credential.secret is None
    stored_text = repr(draft.keep) + repr(credential)
    for code in [*codes, *shown]:
        assert code not in stored_text
    assert all(digest.startswith("$argon2id$") for digest in digests)
    assert [verify_code(d, c) for d, c in zip(digests, codes, strict=True)] == [True] * 10
    assert [item.slot for item in credential.items] == [str(n) for n in range(1, 11)]


async def test_finishing_needs_the_saved_box_ticked() -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    for response in ({}, {"saved": ""}, {"saved": "yes"}):
        with pytest.raises(EnrolmentRefused, match="Confirm that you saved the codes"):
            await METHOD.finish_enrolment(CONTEXT, draft.keep, draft.secret, response)


async def test_a_draft_without_digests_is_rejected() -> None:
    with pytest.raises(ResponseRejected):
        await METHOD.finish_enrolment(CONTEXT, {"digests": ["x"]}, None, {"saved": "on"})


async def test_every_code_opens_its_own_item() -> None:
    draft, credential = await enrolled()
    credentials = [stored(credential)]

    for number, code in enumerate(draft.show["codes"]):
        verified = await METHOD.verify(CONTEXT, {}, credentials, {"code": code})
        assert (verified.credential_id, verified.use_item) == (7, 100 + number)
        assert verified.state is None


@pytest.mark.parametrize(
    "typed", ["{a}-{b}", "{a}{b}", "{a} {b}", " {lower_a} - {lower_b} ", "{a}\t{b}"]
)
async def test_codes_typed_loosely_are_accepted(typed: str) -> None:
    draft, credential = await enrolled()
    a, b = draft.show["codes"][3].split("-")
    answer = typed.format(a=a, b=b, lower_a=a.lower(), lower_b=b.lower())

    verified = await METHOD.verify(CONTEXT, {}, [stored(credential)], {"code": answer})
    assert verified.use_item == 103


def test_look_alike_letters_read_as_digits() -> None:
    assert normalise_backup_code("o1il0-abcde") == "0111" + "0ABCDE"
    assert normalise_backup_code("OIL") == "011"


async def test_a_used_code_is_refused() -> None:
    draft, credential = await enrolled()
    with pytest.raises(ResponseRejected, match="wrong or already used"):
        await METHOD.verify(
            CONTEXT,
            {},
            [stored(credential, used=frozenset({100}))],
            {"code": draft.show["codes"][0]},
        )


@pytest.mark.parametrize(
    "junk", ["", "ABCDE", "ABCDE-ABCDE-A", "ABCDE_ABCDE", "ÄBCDE-ABCDE", "0" * 400]
)
async def test_malformed_codes_are_refused_without_hashing(junk: str) -> None:
    _, credential = await enrolled()
    with pytest.raises(ResponseRejected, match="malformed"):
        await METHOD.verify(CONTEXT, {}, [stored(credential)], {"code": junk})


async def test_a_made_up_code_is_refused() -> None:
    draft, credential = await enrolled()
    with pytest.raises(ResponseRejected, match="wrong or already used"):
        await METHOD.verify(
            CONTEXT, {}, [stored(credential)], {"code": made_up_code(draft.show["codes"])}
        )


async def test_a_code_from_another_set_is_refused() -> None:
    other, _ = await enrolled()
    _, credential = await enrolled()
    with pytest.raises(ResponseRejected):
        await METHOD.verify(CONTEXT, {}, [stored(credential)], {"code": other.show["codes"][0]})


async def test_hashing_and_checking_run_in_the_pool_one_job_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = HashingPool(PasswordHashing(), threads=2)
    jobs: list[str] = []
    monkeypatch.setattr(pool, "run", counting_jobs(pool, jobs))
    threads: list[threading.Thread] = []
    monkeypatch.setattr(backup_codes, "hash_code", in_thread_log(hash_code, threads))
    monkeypatch.setattr(backup_codes, "verify_code", in_thread_log(verify_code, threads))
    method = BackupCodesMethod(pool)
    draft, credential = await enrolled(method)
    await method.verify(CONTEXT, {}, [stored(credential)], {"code": draft.show["codes"][-1]})

    assert len(threads) == 20  # ten hashed, ten checked (the last code matches last)
    assert {thread.name.split("_")[0] for thread in threads} == {"twofa-argon2"}
    # The set is one job and the answer another: one queue place each, never ten.
    assert len(jobs) == 2
    assert all(name.startswith("twofa-argon2") for name in jobs)
    pool.close()


async def test_a_full_hashing_pool_refuses_at_once_and_hashes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = HashingPool(PasswordHashing(), threads=1, queue_limit=0)
    method = BackupCodesMethod(pool)
    draft, credential = await enrolled(method)
    hashed: list[threading.Thread] = []
    monkeypatch.setattr(backup_codes, "hash_code", in_thread_log(hash_code, hashed))
    monkeypatch.setattr(backup_codes, "verify_code", in_thread_log(verify_code, hashed))
    answer = {"code": draft.show["codes"][0]}

    async with pool_full(pool):
        with pytest.raises(HashingBusy):
            await method.verify(CONTEXT, {}, [stored(credential)], answer)
        with pytest.raises(HashingBusy):
            await method.begin_enrolment(CONTEXT)
        assert hashed == []

    verified = await method.verify(CONTEXT, {}, [stored(credential)], answer)
    assert verified.use_item == 100
    pool.close()

"""Security questions as a method: the admin's pool and N (with safe fallbacks), choosing N
different questions, answers normalised and stored only as slow hashes, two questions asked
at random, both answers needed, and every answer checked whatever the first one was."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.authenticator_security_questions import (
    SecurityAnswers,
    answer_for,
    enrolment_form,
)
from tests.support.hashing import counting_jobs, pool_full
from tests.unit.methods.threads import in_thread_log
from twofa.methods import security_questions
from twofa.methods.base import (
    EnrolmentRefused,
    MethodContext,
    MethodUser,
    NewCredential,
    ResponseRejected,
    StoredCredential,
    StoredItem,
)
from twofa.methods.security_questions import (
    DEFAULT_ANSWERS_REQUIRED,
    DEFAULT_QUESTIONS,
    SecurityQuestionsMethod,
    normalise_answer,
    pool_from_options,
)
from twofa.security.code_hashing import hash_answer, verify_answer
from twofa.security.hashing_pool import HashingBusy, HashingPool
from twofa.security.passwords import PasswordHashing

USER = MethodUser(1, "alice", "Alice", "alice@example.com")
NOW = datetime(2026, 11, 28, tzinfo=UTC)
METHOD = SecurityQuestionsMethod(HashingPool(PasswordHashing()))


def context(options: Mapping[str, Any] | None = None) -> MethodContext:
    return MethodContext(USER, NOW, options or {})


def stored(credential: NewCredential) -> StoredCredential:
    items = tuple(
        StoredItem(id=100 + n, slot=item.slot, digest=item.digest, used=False)
        for n, item in enumerate(credential.items)
    )
    return StoredCredential(9, credential.label, None, {}, 1, items)


async def enrol(
    options: Mapping[str, Any] | None = None, method: SecurityQuestionsMethod = METHOD
) -> tuple[SecurityAnswers, StoredCredential]:
    person = SecurityAnswers()
    draft = await method.begin_enrolment(context(options))
    response = person.enrolment_response(draft.show, None)
    credential = await method.finish_enrolment(context(options), draft.keep, None, response)
    return person, stored(credential)


def test_without_admin_options_the_built_in_pool_and_three_answers_apply() -> None:
    pool = pool_from_options({})
    assert pool.questions == DEFAULT_QUESTIONS
    assert len(DEFAULT_QUESTIONS) == 8
    assert pool.answers_required == DEFAULT_ANSWERS_REQUIRED == 3


@pytest.mark.parametrize(
    ("options", "questions", "required"),
    [
        ({"questions": ["A one?", "B two?"], "answers_required": 2}, ("A one?", "B two?"), 2),
        ({"questions": ["  A   one? ", "A one?", 7, ""], "answers_required": 1}, ("A one?",), 1),
        ({"questions": ["A one?", "B two?"], "answers_required": 9}, ("A one?", "B two?"), 2),
        ({"questions": [], "answers_required": 0}, DEFAULT_QUESTIONS, 1),
        ({"questions": "not a list", "answers_required": True}, DEFAULT_QUESTIONS, 3),
        ({"answers_required": "3"}, DEFAULT_QUESTIONS, 3),
    ],
)
def test_unusable_options_fall_back_to_something_usable(
    options: dict[str, Any], questions: tuple[str, ...], required: int
) -> None:
    pool = pool_from_options(options)
    assert (pool.questions, pool.answers_required) == (questions, required)


async def test_enrolment_offers_the_admins_pool_and_n() -> None:
    options = {"questions": ["Q one?", "Q two?", "Q three?"], "answers_required": 2}
    draft = await METHOD.begin_enrolment(context(options))
    assert draft.show == {"questions": ["Q one?", "Q two?", "Q three?"], "count": 2}
    assert draft.keep == draft.show
    assert draft.secret is None


async def test_answers_are_stored_only_as_slow_hashes_of_the_normalised_text() -> None:
    draft = await METHOD.begin_enrolment(context())
    form = enrolment_form(list(DEFAULT_QUESTIONS), 3)
    form["answer_1"] = "  Mr   WHISKERS  "
    credential = await METHOD.finish_enrolment(context(), draft.keep, None, form)

    assert [item.slot for item in credential.items] == list(DEFAULT_QUESTIONS[:3])
    assert credential.secret is None
    assert "whiskers" not in repr(credential).casefold()
    for item in credential.items:
        assert item.digest.startswith("$argon2id$")
    assert verify_answer(credential.items[0].digest, "mr whiskers")
    assert verify_answer(
        credential.items[1].digest, normalise_answer(answer_for(DEFAULT_QUESTIONS[1]))
    )


def test_normalising_folds_case_and_collapses_whitespace() -> None:
    assert normalise_answer("  Straße\tIN  Berlin \n") == "strasse in berlin"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"question_2": "What was the name of your first pet?"}, "3 different questions"),
        ({"question_3": "Who are you?"}, "Choose question 3 from the list"),
        ({"question_1": ""}, "Choose question 1 from the list"),
        ({"answer_2": "  x  "}, "Answer question 2 with at least 2 characters"),
        ({"answer_3": "   "}, "Answer question 3 with at least 2 characters"),
        ({"answer_1": "y" * 201}, "under 200 characters"),
    ],
)
async def test_enrolment_forms_the_user_must_correct(change: dict[str, str], message: str) -> None:
    draft = await METHOD.begin_enrolment(context())
    form = {**enrolment_form(list(DEFAULT_QUESTIONS), 3), **change}
    with pytest.raises(EnrolmentRefused, match=message):
        await METHOD.finish_enrolment(context(), draft.keep, None, form)


async def test_the_pool_kept_with_the_draft_is_the_one_checked() -> None:
    """An admin editing the pool meanwhile does not break a form being filled in."""
    draft = await METHOD.begin_enrolment(context())
    later = context({"questions": ["Something else?"], "answers_required": 1})
    credential = await METHOD.finish_enrolment(
        later, draft.keep, None, enrolment_form(list(DEFAULT_QUESTIONS), 3)
    )
    assert len(credential.items) == 3


async def test_two_different_questions_of_the_users_are_asked_at_random() -> None:
    person, credential = await enrol()
    seen: Counter[str] = Counter()
    for _ in range(60):
        prompt = await METHOD.start(context(), [credential])
        asked = prompt.show["questions"]
        assert len(asked) == 2
        assert len(set(asked)) == 2
        assert set(asked) <= set(person.answers)
        slots = {item.id: item.slot for item in credential.items}
        assert [slots[item_id] for item_id in prompt.keep["asked"]] == asked  # answer_1 is asked[0]
        seen.update(asked)
    assert set(seen) == set(person.answers)  # 60 draws of 2 from 3: each one comes up


async def test_both_right_answers_verify() -> None:
    person, credential = await enrol()
    prompt = await METHOD.start(context(), [credential])
    verified = await METHOD.verify(
        context(), prompt.keep, [credential], person.verification_response(prompt.show, None)
    )
    assert verified.credential_id == 9
    assert verified.use_item is None


async def test_answers_typed_with_other_case_and_spacing_verify() -> None:
    person, credential = await enrol()
    prompt = await METHOD.start(context(), [credential])
    typed = {
        k: f"  {v.upper()}  ".replace(" ", "   ")
        for k, v in person.verification_response(prompt.show, None).items()
    }
    verified = await METHOD.verify(context(), prompt.keep, [credential], typed)
    assert verified.credential_id == 9


@pytest.mark.parametrize("wrong", ["answer_1", "answer_2", "both", "missing"])
async def test_one_wrong_answer_is_enough_to_refuse(wrong: str) -> None:
    person, credential = await enrol()
    prompt = await METHOD.start(context(), [credential])
    response = person.verification_response(prompt.show, None)
    if wrong == "both":
        response = {k: "nope" for k in response}
    elif wrong == "missing":
        del response["answer_2"]
    else:
        response[wrong] = "nope"
    with pytest.raises(ResponseRejected, match="wrong answer"):
        await METHOD.verify(context(), prompt.keep, [credential], response)


async def test_swapped_answers_are_refused() -> None:
    person, credential = await enrol()
    prompt = await METHOD.start(context(), [credential])
    response = person.verification_response(prompt.show, None)
    swapped = {"answer_1": response["answer_2"], "answer_2": response["answer_1"]}
    with pytest.raises(ResponseRejected):
        await METHOD.verify(context(), prompt.keep, [credential], swapped)


async def test_every_asked_answer_is_checked_even_after_a_wrong_one_in_one_pool_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = HashingPool(PasswordHashing(), threads=2)
    method = SecurityQuestionsMethod(pool)
    _, credential = await enrol(method=method)
    prompt = await method.start(context(), [credential])
    jobs: list[str] = []
    monkeypatch.setattr(pool, "run", counting_jobs(pool, jobs))
    threads: list[threading.Thread] = []
    monkeypatch.setattr(
        security_questions,
        "verify_answer",
        in_thread_log(verify_answer, threads),
    )
    with pytest.raises(ResponseRejected):
        await method.verify(
            context(), prompt.keep, [credential], {"answer_1": "nope", "answer_2": "nope"}
        )

    assert len(threads) == 2  # no early exit that would time which answer was wrong
    assert {thread.name.split("_")[0] for thread in threads} == {"twofa-argon2"}
    assert len(jobs) == 1  # both answers in one job: one queue place, not two
    pool.close()


async def test_enrolment_hashes_in_the_pool_as_one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = HashingPool(PasswordHashing(), threads=2)
    jobs: list[str] = []
    monkeypatch.setattr(pool, "run", counting_jobs(pool, jobs))
    threads: list[threading.Thread] = []
    monkeypatch.setattr(security_questions, "hash_answer", in_thread_log(hash_answer, threads))
    await enrol(method=SecurityQuestionsMethod(pool))
    assert len(threads) == 3
    assert {thread.name.split("_")[0] for thread in threads} == {"twofa-argon2"}
    assert len(jobs) == 1
    pool.close()


async def test_a_full_hashing_pool_refuses_at_once_and_hashes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = HashingPool(PasswordHashing(), threads=1, queue_limit=0)
    method = SecurityQuestionsMethod(pool)
    person, credential = await enrol(method=method)
    prompt = await method.start(context(), [credential])
    answers = person.verification_response(prompt.show, None)
    draft = await method.begin_enrolment(context())  # hashes nothing: it offers the pool
    hashed: list[threading.Thread] = []
    monkeypatch.setattr(security_questions, "hash_answer", in_thread_log(hash_answer, hashed))
    monkeypatch.setattr(security_questions, "verify_answer", in_thread_log(verify_answer, hashed))

    async with pool_full(pool):
        with pytest.raises(HashingBusy):
            await method.verify(context(), prompt.keep, [credential], answers)
        with pytest.raises(HashingBusy):
            await method.finish_enrolment(
                context(), draft.keep, None, person.enrolment_response(draft.show, None)
            )
        assert hashed == []

    verified = await method.verify(context(), prompt.keep, [credential], answers)
    assert verified.credential_id == 9
    pool.close()


async def test_a_challenge_for_replaced_answers_is_refused() -> None:
    person, old = await enrol()
    prompt = await METHOD.start(context(), [old])
    _, new = await enrol()
    renumbered = StoredCredential(
        10,
        new.label,
        None,
        {},
        1,
        tuple(StoredItem(200 + n, i.slot, i.digest, False) for n, i in enumerate(new.items)),
    )
    with pytest.raises(ResponseRejected, match="no longer stored"):
        await METHOD.verify(
            context(), prompt.keep, [renumbered], person.verification_response(prompt.show, None)
        )


async def test_with_one_answer_required_one_question_is_asked() -> None:
    options = {"questions": ["Only one?"], "answers_required": 1}
    person, credential = await enrol(options)
    prompt = await METHOD.start(context(options), [credential])
    assert prompt.show["questions"] == ["Only one?"]
    verified = await METHOD.verify(
        context(), prompt.keep, [credential], person.verification_response(prompt.show, None)
    )
    assert verified.credential_id == 9


async def test_a_challenge_that_asked_nothing_is_refused() -> None:
    _, credential = await enrol()
    with pytest.raises(ResponseRejected):
        await METHOD.verify(context(), {"asked": []}, [credential], {})
    with pytest.raises(ResponseRejected):
        await METHOD.verify(context(), {}, [credential], {})

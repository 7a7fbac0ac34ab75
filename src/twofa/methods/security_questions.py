"""Security questions (knowledge-based answers) as a backup second factor. At enrolment the
user picks N different questions from the admin's pool and answers them; each answer is
normalised and stored only as a password-grade slow hash. A sign-in asks two of the user's
questions at random and needs both answers right; which one was wrong is never revealed.

The pool and N are the admin's method options (`{"questions": [...], "answers_required": N}`);
without them, or with unusable ones, the built-in pool and N = 3 apply.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twofa.methods.base import (
    Draft,
    EnrolmentRefused,
    MethodContext,
    MethodKind,
    NewCredential,
    NewItem,
    Prompt,
    ResponseRejected,
    StoredCredential,
    StoredItem,
    Verified,
)
from twofa.security.code_hashing import Hasher, hash_answer, verify_answer

CODE: Final = "security_questions"
DEFAULT_QUESTIONS: Final = (
    "What was the name of your first pet?",
    "In which city were your parents married?",
    "What was the name of your first school?",
    "What is the name of the street you grew up on?",
    "What was the make of your first car?",
    "What was your childhood nickname?",
    "What is the middle name of your oldest sibling?",
    "In which town did you have your first job?",
)
DEFAULT_ANSWERS_REQUIRED: Final = 3
MIN_ANSWERS_REQUIRED: Final = 1
MAX_ANSWERS_REQUIRED: Final = 5
QUESTIONS_ASKED: Final = 2
MIN_ANSWER_LENGTH: Final = 2
MAX_ANSWER_LENGTH: Final = 200  # longer is a paste accident, and argon2 would hash it anyway
MAX_QUESTION_LENGTH: Final = 200  # stored as the item's slot (300 characters)
_SYSTEM_RANDOM: Final = secrets.SystemRandom()


@dataclass(frozen=True)
class QuestionPool:
    questions: tuple[str, ...]
    answers_required: int


def normalise_question(text: str) -> str:
    return " ".join(text.split())


def normalise_answer(text: str) -> str:
    """Answers as people remember them: case, and spaces around and between words, ignored."""
    return " ".join(text.casefold().split())


def pool_from_options(options: Mapping[str, Any]) -> QuestionPool:
    """The admin's pool and N, falling back to the built-in ones for anything unusable, so a
    hand-edited setting can never leave users with nothing to pick from."""
    raw = options.get("questions")
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    if isinstance(raw, list):
        cleaned = tuple(
            dict.fromkeys(
                normalise_question(q)
                for q in raw
                if isinstance(q, str) and 0 < len(normalise_question(q)) <= MAX_QUESTION_LENGTH
            )
        )
        questions = cleaned or DEFAULT_QUESTIONS
    required = options.get("answers_required", DEFAULT_ANSWERS_REQUIRED)
    if not isinstance(required, int) or isinstance(required, bool):
        required = DEFAULT_ANSWERS_REQUIRED
    required = max(MIN_ANSWERS_REQUIRED, min(required, MAX_ANSWERS_REQUIRED, len(questions)))
    return QuestionPool(questions, required)


def _hash_answers(answers: Sequence[str]) -> list[str]:
    return [hash_answer(answer) for answer in answers]


def _all_answers_match(pairs: Sequence[tuple[StoredItem, str]]) -> bool:
    """Every answer is checked, right or wrong, so the time taken does not tell which failed."""
    results = [verify_answer(item.digest, answer) for item, answer in pairs]
    return bool(results) and all(results)


class SecurityQuestionsMethod:
    """Meant as a backup method: answers are weaker than a device, so two are asked at once
    and the framework's per-method throttle limits guessing. Every hash runs in `hasher` (the
    gateway's hashing pool), as one job per request: the N answers of an enrolment, or the two
    answers of a sign-in."""

    code = CODE
    title = "Security questions"
    kind = MethodKind.ANSWERS
    many_per_user = False
    checks_slowly = True
    challenge_seconds = 600  # people take a while to recall an answer

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        pool = pool_from_options(context.options)
        choice = {"questions": list(pool.questions), "count": pool.answers_required}
        # The pool is kept as it was shown: an admin editing it meanwhile does not break
        # the form the user is filling in.
        return Draft(show=choice, keep=choice)

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        pool, count = keep.get("questions"), keep.get("count")
        if not isinstance(pool, list) or not isinstance(count, int) or count < 1:
            raise ResponseRejected("enrolment draft has no question pool")
        chosen: list[str] = []
        answers: list[str] = []
        for number in range(1, count + 1):
            question = normalise_question(response.get(f"question_{number}", ""))
            if question not in pool:
                raise EnrolmentRefused(f"Choose question {number} from the list.")
            if question in chosen:
                raise EnrolmentRefused(f"Choose {count} different questions.")
            answer = normalise_answer(response.get(f"answer_{number}", ""))
            if len(answer) < MIN_ANSWER_LENGTH:
                raise EnrolmentRefused(
                    f"Answer question {number} with at least {MIN_ANSWER_LENGTH} characters."
                )
            if len(answer) > MAX_ANSWER_LENGTH:
                raise EnrolmentRefused(
                    f"Keep answer {number} under {MAX_ANSWER_LENGTH} characters."
                )
            chosen.append(question)
            answers.append(answer)
        digests = await self._hasher.run(_hash_answers, answers)
        items = tuple(
            NewItem(slot=question, digest=digest)
            for question, digest in zip(chosen, digests, strict=True)
        )
        return NewCredential(label=self.title, items=items)

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt:
        items = [item for credential in credentials for item in credential.items]
        # No items (never written by finish_enrolment) asks nothing, and verify refuses.
        asked = _SYSTEM_RANDOM.sample(items, min(QUESTIONS_ASKED, len(items)))
        return Prompt(
            show={"questions": [item.slot for item in asked]},
            keep={"asked": [item.id for item in asked]},
        )

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        asked = keep.get("asked")
        if not isinstance(asked, list) or not asked:
            raise ResponseRejected("challenge asked no questions")
        owners = {
            item.id: (credential.id, item)
            for credential in credentials
            for item in credential.items
        }
        if any(item_id not in owners for item_id in asked):
            raise ResponseRejected("asked questions no longer stored (answers were replaced)")
        pairs = [
            (owners[item_id][1], normalise_answer(response.get(f"answer_{number}", "")))
            for number, item_id in enumerate(asked, start=1)
        ]
        if not await self._hasher.run(_all_answers_match, pairs):
            raise ResponseRejected("wrong answer to at least one question")
        return Verified(owners[asked[0]][0])

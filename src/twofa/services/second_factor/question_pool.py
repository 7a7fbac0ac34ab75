"""The admin's pool of security questions and how many of them each user answers (N): the
method options `method.security_questions`, edited from the console page and the CLI. Until
the admin changes anything, the built-in pool and N = 3 apply; the first edit starts from them.

Users who already answered a question the admin later removes keep it: their answers are
stored with the question's text, so removing only stops new users from picking it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.methods.security_questions import (
    CODE,
    MAX_ANSWERS_REQUIRED,
    MAX_QUESTION_LENGTH,
    MIN_ANSWERS_REQUIRED,
    QuestionPool,
    normalise_question,
    pool_from_options,
)
from twofa.services.second_factor.method_options import MethodOptions, Options
from twofa.services.settings.cache import SettingsCache
from twofa.services.settings.console import SettingsRejected

AUDIT_KIND: Final = "settings_security_questions"
MIN_QUESTION_LENGTH: Final = 5
MAX_POOL_SIZE: Final = 50


@dataclass(frozen=True)
class QuestionPoolView:
    questions: tuple[str, ...]
    answers_required: int
    customised: bool  # False while the built-in pool applies


def _as_json(pool: QuestionPool) -> dict[str, Any]:
    return {"questions": list(pool.questions), "answers_required": pool.answers_required}


def _with_question(pool: QuestionPool, text: str) -> QuestionPool:
    question = normalise_question(text)
    if not MIN_QUESTION_LENGTH <= len(question) <= MAX_QUESTION_LENGTH:
        raise SettingsRejected(
            {"question": f"between {MIN_QUESTION_LENGTH} and {MAX_QUESTION_LENGTH} characters"}
        )
    if question.casefold() in {q.casefold() for q in pool.questions}:
        raise SettingsRejected({"question": "this question is already in the pool"})
    if len(pool.questions) >= MAX_POOL_SIZE:
        raise SettingsRejected({"question": f"the pool holds at most {MAX_POOL_SIZE} questions"})
    return QuestionPool((*pool.questions, question), pool.answers_required)


def _without_question(pool: QuestionPool, text: str) -> QuestionPool:
    question = normalise_question(text)
    if question not in pool.questions:
        raise SettingsRejected({"question": "this question is not in the pool"})
    if len(pool.questions) - 1 < pool.answers_required:
        raise SettingsRejected(
            {
                "question": f"users answer {pool.answers_required} questions, so the pool needs "
                f"at least that many: lower the number of answers first"
            }
        )
    remaining = tuple(q for q in pool.questions if q != question)
    return QuestionPool(remaining, pool.answers_required)


def _with_count(pool: QuestionPool, count: int) -> QuestionPool:
    if not MIN_ANSWERS_REQUIRED <= count <= MAX_ANSWERS_REQUIRED:
        raise SettingsRejected(
            {"answers_required": f"between {MIN_ANSWERS_REQUIRED} and {MAX_ANSWERS_REQUIRED}"}
        )
    if count > len(pool.questions):
        raise SettingsRejected(
            {"answers_required": f"at most the {len(pool.questions)} questions in the pool"}
        )
    return QuestionPool(pool.questions, count)


def _in_force(stored: Options | None) -> Options:
    return _as_json(pool_from_options(stored or {}))


class QuestionPoolService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        cache: SettingsCache,
    ) -> None:
        """`cache`: the gateway's console settings cache, told at once of a save."""
        self._options = MethodOptions(db, clock, cache, CODE, AUDIT_KIND, _in_force)

    async def pool(self) -> QuestionPoolView:
        options, customised = await self._options.read()
        pool = pool_from_options(options)
        return QuestionPoolView(pool.questions, pool.answers_required, customised)

    async def add(self, question: str, actor: str, client: ClientInfo) -> QuestionPoolView:
        return await self._edit(lambda pool: _with_question(pool, question), actor, client)

    async def remove(self, question: str, actor: str, client: ClientInfo) -> QuestionPoolView:
        return await self._edit(lambda pool: _without_question(pool, question), actor, client)

    async def set_count(self, count: int, actor: str, client: ClientInfo) -> QuestionPoolView:
        return await self._edit(lambda pool: _with_count(pool, count), actor, client)

    async def replace(
        self, questions: Sequence[str], answers_required: int, actor: str, client: ClientInfo
    ) -> QuestionPoolView:
        """The whole pool at once (the API's PUT), checked by the same rules as one question
        at a time; a problem names the question it is about."""

        def rebuilt(_: QuestionPool) -> QuestionPool:
            pool = QuestionPool((), MIN_ANSWERS_REQUIRED)
            for question in questions:
                try:
                    pool = _with_question(pool, question)
                except SettingsRejected as rejected:
                    why = rejected.problems["question"]
                    raise SettingsRejected({"questions": f"{question!r}: {why}"}) from None
            if len(pool.questions) < MIN_ANSWERS_REQUIRED:
                raise SettingsRejected({"questions": "at least one question"})
            return _with_count(pool, answers_required)

        return await self._edit(rebuilt, actor, client)

    async def _edit(
        self, change: Callable[[QuestionPool], QuestionPool], actor: str, client: ClientInfo
    ) -> QuestionPoolView:
        """A rejected change (SettingsRejected) writes nothing."""
        options, _ = await self._options.edit(
            lambda current: _as_json(change(pool_from_options(current))), actor, client
        )
        pool = pool_from_options(options)
        return QuestionPoolView(pool.questions, pool.answers_required, True)

"""`twofa questions`: the security-question pool users choose from and how many questions each
user answers, the same settings as the console's Security questions page (every change is
audited, naming `cli`)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

import typer

from twofa.cli.common import echo_json, run_with_gateway
from twofa.cli.settings_cmd import CLI_ACTOR, run_edit
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway
from twofa.services.second_factor.question_pool import QuestionPoolView
from twofa.services.settings.console import SettingsRejected

questions_app = typer.Typer(
    help="Security questions: the pool users choose from and how many they answer.",
    no_args_is_help=True,
)

ARGUMENT_NAMES: Final = {"question": "QUESTION", "answers_required": "COUNT"}


def _echo_pool(pool: QuestionPoolView) -> None:
    origin = "custom pool" if pool.customised else "built-in pool (not changed yet)"
    typer.echo(f"users answer {pool.answers_required} questions; {origin}:")
    for number, question in enumerate(pool.questions, start=1):
        typer.echo(f"{number:>3}. {question}")


@questions_app.command("list")
def list_questions(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The questions users choose from, numbered, and how many each user answers."""

    async def read(gateway: Gateway) -> QuestionPoolView:
        return await gateway.question_pool.pool()

    pool = run_with_gateway(ctx, read)
    if as_json:
        echo_json(dataclasses.asdict(pool))
    else:
        _echo_pool(pool)


@questions_app.command("add")
def add_question(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question, as users will read it.")],
) -> None:
    """Add a question to the pool (the first change starts from the built-in pool)."""

    async def add(gateway: Gateway) -> QuestionPoolView:
        return await gateway.question_pool.add(question, CLI_ACTOR, CLI)

    _echo_pool(run_edit(ctx, add, ARGUMENT_NAMES))


@questions_app.command("remove")
def remove_question(
    ctx: typer.Context,
    question: Annotated[
        str, typer.Argument(help="The question's number in `twofa questions list`, or its text.")
    ],
) -> None:
    """Take a question out of the pool. Users who already answered it keep it."""

    async def remove(gateway: Gateway) -> QuestionPoolView:
        service = gateway.question_pool
        text = question
        if question.strip().isascii() and question.strip().isdigit():
            questions = (await service.pool()).questions
            number = int(question)
            if not 1 <= number <= len(questions):
                problem = f"there is no question {number} (1 to {len(questions)})"
                raise SettingsRejected({"question": problem})
            text = questions[number - 1]
        return await service.remove(text, CLI_ACTOR, CLI)

    _echo_pool(run_edit(ctx, remove, ARGUMENT_NAMES))


@questions_app.command("set-count")
def set_count(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Argument(help="How many questions each user answers (1 to 5).", min=1, max=5)
    ],
) -> None:
    """Set how many questions each user answers at set-up (at sign-in, two are asked)."""

    async def save(gateway: Gateway) -> QuestionPoolView:
        return await gateway.question_pool.set_count(count, CLI_ACTOR, CLI)

    _echo_pool(run_edit(ctx, save, ARGUMENT_NAMES))

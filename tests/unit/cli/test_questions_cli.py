"""`twofa questions …`: the security-question pool and N from the command line, the same
rules as the console page, each change audited as `cli`."""

from __future__ import annotations

import json

from tests.unit.cli.conftest import TwofaCli
from twofa.methods.security_questions import DEFAULT_QUESTIONS
from twofa.services.second_factor.question_pool import AUDIT_KIND


def pool(cli: TwofaCli) -> dict[str, object]:
    answer: dict[str, object] = json.loads(cli.ok("questions", "list", "--json").stdout)
    return answer


def test_list_shows_the_built_in_pool_numbered(cli: TwofaCli) -> None:
    out = cli.ok("questions", "list").stdout
    assert "users answer 3 questions; built-in pool (not changed yet):" in out
    assert f"  1. {DEFAULT_QUESTIONS[0]}" in out
    assert f"  8. {DEFAULT_QUESTIONS[7]}" in out
    assert pool(cli) == {
        "questions": list(DEFAULT_QUESTIONS),
        "answers_required": 3,
        "customised": False,
    }


def test_add_remove_and_set_count_are_saved_and_audited(cli: TwofaCli) -> None:
    added = cli.ok("questions", "add", "Who was your first boss?").stdout
    assert "custom pool" in added
    assert "  9. Who was your first boss?" in added
    cli.ok("questions", "remove", "2")  # by its number in the list
    cli.ok("questions", "remove", DEFAULT_QUESTIONS[0])  # or by its text
    cli.ok("questions", "set-count", "2")

    assert pool(cli) == {
        "questions": [*DEFAULT_QUESTIONS[2:], "Who was your first boss?"],
        "answers_required": 2,
        "customised": True,
    }
    events = [row for row in cli.audit_rows() if row.kind == AUDIT_KIND]
    assert [row.username for row in events] == ["cli"] * 4
    assert [row.detail["after"]["answers_required"] for row in events] == [3, 3, 3, 2]


def test_impossible_changes_exit_2_and_save_nothing(cli: TwofaCli) -> None:
    for args, problem in [
        (
            ("add", DEFAULT_QUESTIONS[0].lower()),
            "error: QUESTION: this question is already in the pool",
        ),
        (("add", "Why?"), "error: QUESTION: between 5 and 200 characters"),
        (("remove", "9"), "error: QUESTION: there is no question 9 (1 to 8)"),
        (
            ("remove", "Not a question in the pool"),
            "error: QUESTION: this question is not in the pool",
        ),
    ]:
        result = cli("questions", *args)
        assert result.exit_code == 2, result.output
        assert problem in result.stderr
        assert "nothing was saved" in result.stderr
    too_many = cli("questions", "set-count", "6")
    assert too_many.exit_code == 2
    assert pool(cli)["customised"] is False
    assert AUDIT_KIND not in cli.audit_kinds()


def test_the_count_cannot_exceed_the_pool(cli: TwofaCli) -> None:
    for _ in range(5):
        cli.ok("questions", "remove", "1")
    assert pool(cli)["questions"] == list(DEFAULT_QUESTIONS[5:])

    result = cli("questions", "set-count", "4")
    assert result.exit_code == 2
    assert "error: COUNT: at most the 3 questions in the pool" in result.stderr
    lower = cli("questions", "remove", "1")
    assert lower.exit_code == 2
    assert "lower the number of answers first" in lower.stderr

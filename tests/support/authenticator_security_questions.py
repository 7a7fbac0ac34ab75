"""What a person does with security questions: pick the first N questions offered, answer
each with something they remember, and later answer whichever two they are asked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import unescape
from typing import Any


def answer_for(question: str) -> str:
    """A memorable answer per question (distinct, so a swapped answer is a wrong one)."""
    return f"Answer to {question.rstrip('?')}"


def enrolment_form(questions: list[str], count: int) -> dict[str, str]:
    form: dict[str, str] = {}
    for number, question in enumerate(questions[:count], start=1):
        form[f"question_{number}"] = question
        form[f"answer_{number}"] = answer_for(question)
    return form


def verification_form(asked: list[str], answers: Mapping[str, str]) -> dict[str, str]:
    return {f"answer_{number}": answers[q] for number, q in enumerate(asked, start=1)}


def questions_on_enrol_page(html: str) -> tuple[list[str], int]:
    """The pool (the first select's options) and N (how many selects) on the set-up page."""
    selects = re.findall(r'<select id="question_\d+".*?</select>', html, re.S)
    assert selects, "no question choice on the page"
    options = re.findall(r'<option value="([^"]*)"', selects[0])
    return [unescape(option) for option in options], len(selects)


def questions_on_verify_page(html: str) -> list[str]:
    labels = re.findall(r'<label for="answer_\d+">(.*?)</label>', html, re.S)
    assert labels, "no question on the page"
    return [unescape(label) for label in labels]


class SecurityAnswers:
    """The user's side for the contract suite."""

    code = "security_questions"

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}

    def enrolment_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        form = enrolment_form([str(q) for q in show["questions"]], int(show["count"]))
        self.answers = {
            form[f"question_{n}"]: form[f"answer_{n}"] for n in range(1, int(show["count"]) + 1)
        }
        return form

    def verification_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        return verification_form([str(q) for q in show["questions"]], self.answers)

    def wrong_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        """Every answer right but the last: both must be right."""
        form = self.verification_response(show, harness)
        form[f"answer_{len(form)}"] = "not the answer"
        return form

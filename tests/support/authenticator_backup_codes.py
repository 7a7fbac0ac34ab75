"""What a person does with backup codes: keep the sheet the set-up page (or its download)
showed, tick "I have saved these codes", and later type one code they have not used yet."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twofa.methods.backup_codes import ALPHABET, CODE_LENGTH, formatted

CODE_PATTERN = re.compile(r"\b[0-9A-Z]{5}-[0-9A-Z]{5}\b")
SAVED = {"saved": "on"}


def codes_from_show(show: Mapping[str, Any]) -> list[str]:
    return [str(code) for code in show["codes"]]


def codes_from_page(html: str) -> list[str]:
    """The codes listed on the set-up page (`<ol id="backup-codes">`)."""
    listing = html.split('id="backup-codes"', 1)[1].split("</ol>", 1)[0]
    return CODE_PATTERN.findall(listing)


def codes_from_download(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def made_up_code(real: list[str]) -> str:
    """A well-formed code that is none of the real ones."""
    for first in ALPHABET:
        candidate = formatted(first * CODE_LENGTH)
        if candidate not in real:
            return candidate
    raise AssertionError("every made-up code is a real one")


class BackupCodeSheet:
    """The saved sheet: each verification uses the next code not crossed out yet."""

    code = "backup_codes"

    def __init__(self) -> None:
        self.codes: list[str] = []
        self.used: list[str] = []

    def enrolment_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        self.codes = codes_from_show(show)
        return dict(SAVED)

    def verification_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        unused = [code for code in self.codes if code not in self.used]
        assert unused, "every backup code on the sheet is used"
        self.used.append(unused[0])
        return {"code": unused[0]}

    def wrong_response(self, show: Mapping[str, Any], harness: object) -> dict[str, str]:
        return {"code": made_up_code(self.codes)}

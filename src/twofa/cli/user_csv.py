"""Reads the CSV file of `twofa user import` into `NewUser` values, keeping each one's line
number so that every problem, found here or by the service, is reported against its line.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from twofa.domain.account_input import ImportProblem, NewUser
from twofa.errors import Invalid

CSV_COLUMNS: Final = ("username", "display_name", "email", "password", "groups")
GROUP_SEPARATOR: Final = ";"


@dataclass(frozen=True)
class LineProblem:
    line: int
    message: str


class ImportFileRejected(Invalid):
    """The import file cannot be imported as it is; nothing was written."""


def rejected_rows(path: Path, problems: Sequence[LineProblem]) -> ImportFileRejected:
    ordered = sorted(problems, key=lambda problem: problem.line)
    bad_rows = len({problem.line for problem in ordered})
    listing = "\n".join(f"  line {p.line}: {p.message}" for p in ordered)
    return ImportFileRejected(f"{path}: nothing imported, {bad_rows} bad row(s):\n{listing}")


@dataclass(frozen=True)
class UserCsv:
    """The well-formed rows as users (with their line numbers) and the malformed rows."""

    users: tuple[NewUser, ...]
    lines: tuple[int, ...]
    malformed: tuple[LineProblem, ...]

    def at_lines(self, problems: Sequence[ImportProblem]) -> list[LineProblem]:
        """Moves the service's problems (by position in `users`) onto file lines."""
        return [LineProblem(self.lines[p.position], p.message) for p in problems]


def read_user_csv(path: Path) -> UserCsv:
    """Raises `ImportFileRejected` when the file as a whole is unusable (encoding, header)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file, strict=True)
            _check_header(path, reader.fieldnames)
            users, lines, malformed = [], [], []
            for row in reader:
                problem = _field_count_problem(row, len(reader.fieldnames or ()))
                if problem:
                    malformed.append(LineProblem(reader.line_num, problem))
                else:
                    users.append(_new_user(row))
                    lines.append(reader.line_num)
    except OSError as exc:
        raise ImportFileRejected(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ImportFileRejected(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise rejected_rows(path, [LineProblem(reader.line_num, str(exc))]) from None
    return UserCsv(tuple(users), tuple(lines), tuple(malformed))


def _check_header(path: Path, columns: Sequence[str] | None) -> None:
    if not columns:
        raise ImportFileRejected(f"{path}: empty file, expected the header {','.join(CSV_COLUMNS)}")
    problems = []
    unknown = [column for column in columns if column not in CSV_COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if "username" not in columns:
        problems.append("no username column")
    if problems:
        expected = ",".join(CSV_COLUMNS)
        message = f"{'; '.join(problems)} (the header should be {expected})"
        raise rejected_rows(path, [LineProblem(1, message)])


def _field_count_problem(row: dict[str | None, object], expected: int) -> str | None:
    """`DictReader` files surplus fields under the key None and fills missing ones with None."""
    surplus = row.get(None)
    found = sum(1 for key, value in row.items() if key is not None and value is not None)
    found += len(surplus) if isinstance(surplus, list) else 0
    if found != expected:
        return f"expected {expected} fields, found {found}"
    return None


def _new_user(row: dict[str | None, object]) -> NewUser:
    def text(column: str) -> str:
        value = row.get(column)
        return value.strip() if isinstance(value, str) else ""

    groups = (group.strip() for group in text("groups").split(GROUP_SEPARATOR))
    return NewUser(
        username=text("username"),
        display_name=text("display_name"),
        email=text("email"),
        password=_raw(row.get("password")) or None,
        groups=tuple(dict.fromkeys(group for group in groups if group)),
    )


def _raw(value: object) -> str:
    """Passwords are taken as written: leading or trailing spaces may be meant."""
    return value if isinstance(value, str) else ""

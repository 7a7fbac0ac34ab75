"""What the account actions accept: the rules for usernames, group names, display names and
e-mail addresses, the shape of one user in a bulk import, and the errors raised when input
is refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twofa.errors import Conflict, Invalid, NotFound, TwofaError


class AccountError(TwofaError):
    """An admin action that cannot be done as asked. The family the console and the CLI catch
    whole; never raised itself, as its members answer differently (an unknown name, a taken
    one, bad input), so each names its category."""


class UnknownAccount(AccountError, NotFound):
    """No user or group by that name."""


class AccountConflict(AccountError, Conflict):
    """The name is taken, or the same users or groups were changed at the same time."""


class InvalidAccountInput(AccountError, Invalid):
    """A name, address or password that breaks the account rules."""


@dataclass(frozen=True)
class NewUser:
    """One user of a bulk import; an empty password leaves the account without one."""

    username: str
    display_name: str = ""
    email: str = ""
    password: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportProblem:
    """Why one entry of a bulk import was refused; `position` indexes the list given."""

    position: int
    message: str


class ImportRejected(InvalidAccountInput):
    """A bulk import had problems, so none of it was written; `problems` lists all of them."""

    def __init__(self, problems: Sequence[ImportProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"entry {p.position + 1}: {p.message}" for p in self.problems))


MAX_NAME_LENGTH = 150
MAX_DISPLAY_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 320


def username_problem(username: str) -> str | None:
    if not username or len(username) > MAX_NAME_LENGTH or any(c.isspace() for c in username):
        return f"invalid username {username!r}: 1-150 characters, no spaces"
    return None


def group_name_problem(name: str) -> str | None:
    if not name or len(name) > MAX_NAME_LENGTH:
        return f"invalid group name {name!r}"
    return None


def new_user_problems(new: NewUser) -> list[str]:
    """What is wrong with one user of an import on its own, before looking at the database."""
    problems = [username_problem(new.username), *map(group_name_problem, new.groups)]
    if len(new.display_name) > MAX_DISPLAY_NAME_LENGTH:
        problems.append(f"display name longer than {MAX_DISPLAY_NAME_LENGTH} characters")
    if len(new.email) > MAX_EMAIL_LENGTH:
        problems.append(f"email longer than {MAX_EMAIL_LENGTH} characters")
    return [problem for problem in problems if problem]

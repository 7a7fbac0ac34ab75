"""What the console's User Management tab reads and the bulk change it makes: each user's
effective 2FA status explained in words, groups with member counts, and 2FA switched on for
the users listed in a CSV file, all or nothing. Single-user actions stay in `accounts`."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import CLI, ClientInfo
from twofa.domain.policy import enrolment_grace
from twofa.errors import Invalid
from twofa.services.second_factor.gate import MethodGate, UnknownMethod, enrolled_methods
from twofa.services.settings.console import ConsoleSettingsService
from twofa.services.settings.two_factor import Enforcement, TwoFactorConfig
from twofa.services.state import audit
from twofa.services.state.lockouts import any_lockout_ends
from twofa.storage.repositories import GroupSearch, Users
from twofa.storage.tables import UserRow

MAX_CSV_BYTES: Final = 1_000_000
USERNAME_COLUMN: Final = "username"


@dataclass(frozen=True)
class UserStatus:
    """One user as the console shows them; `explanation` is the status in words."""

    username: str
    display_name: str
    email: str
    enabled: bool
    is_admin: bool
    groups: tuple[str, ...]
    twofa_switched_on: bool  # the user's own switch, whatever their groups say
    required: bool
    explanation: tuple[str, ...]
    locked_until: datetime | None


@dataclass(frozen=True)
class GroupLine:
    name: str
    twofa_enabled: bool
    member_count: int


@dataclass(frozen=True)
class LineProblem:
    line: int
    message: str


class BulkEnableRejected(Invalid):
    """The file was not used; `problems` lists every bad line (line 1 is the header)."""

    def __init__(self, problems: Sequence[LineProblem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda problem: problem.line))
        super().__init__("; ".join(f"line {p.line}: {p.message}" for p in self.problems))


@dataclass(frozen=True)
class BulkEnableResult:
    switched_on: tuple[str, ...]
    already_on: tuple[str, ...]


def required_because(everyone: bool, user_switch: bool, enabled_groups: Sequence[str]) -> str:
    """Why 2FA applies to the user, or "" when it does not."""
    reasons = []
    if everyone:
        reasons.append("for everyone")
    if user_switch:
        reasons.append("set for the user")
    if enabled_groups:
        noun = "group" if len(enabled_groups) == 1 else "groups"
        reasons.append(f"via {noun} {', '.join(enabled_groups)}")
    return " and ".join(reasons)


def grace_phrase(
    config: TwoFactorConfig,
    postponements_used: int,
    grace_started_at: datetime | None,
    now: datetime,
) -> str:
    """How much of the enrolment grace period a required, not yet enrolled user has left.
    With both limits set, the first one used up ends the grace period."""
    grace = enrolment_grace(
        config.grace_postponements, config.grace_days, postponements_used, grace_started_at, now
    )
    if grace.postponements_left is None and grace.days_left is None:
        return ""
    if not grace.may_postpone:
        return "grace period used up: must enrol at the next sign-in"
    left: list[str] = []
    if grace.postponements_left is not None:
        remaining = grace.postponements_left
        left.append(f"{remaining} postponement{'' if remaining == 1 else 's'} left")
    if grace.days_left is not None:
        if grace_started_at is None:
            left.append(f"{config.grace_days} days from the first sign-in")
        else:
            ends = grace_started_at + timedelta(days=config.grace_days)
            left.append(f"until {ends:%Y-%m-%d %H:%M} UTC")
    return "in grace period, " + ", ".join(left)


def lock_phrase(locked_until: datetime, now: datetime) -> str:
    shown = "%H:%M" if locked_until.date() == now.date() else "%Y-%m-%d %H:%M"
    return f"locked until {locked_until.strftime(shown)} UTC"


def explain(
    *,
    enabled: bool,
    required_reason: str,
    enrolled_methods: Sequence[str],
    locked_until: datetime | None,
    grace: str,
    now: datetime,
    first_method: str = "Duo Push",
) -> tuple[str, ...]:
    """The status phrases in the order an admin reads them: can the user sign in at all, does
    2FA apply and why, what is set up."""
    phrases = []
    if not enabled:
        phrases.append("disabled")
    if locked_until is not None:
        phrases.append(lock_phrase(locked_until, now))
    phrases.append(f"required — {required_reason}" if required_reason else "not required")
    if enrolled_methods:
        phrases.append(f"enrolled: {', '.join(enrolled_methods)}")
    elif required_reason:
        phrases.append(f"not enrolled yet: sets up {first_method} at the next sign-in")
        if grace:
            phrases.append(grace)
    return tuple(phrases)


def usernames_in_csv(content: bytes) -> list[tuple[int, str]]:
    """(line, username) for each row of a CSV file with a `username` column; other columns
    are ignored. Raises `BulkEnableRejected` with every malformed line."""
    if len(content) > MAX_CSV_BYTES:
        raise BulkEnableRejected([LineProblem(0, f"the file is over {MAX_CSV_BYTES} bytes")])
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BulkEnableRejected([LineProblem(0, f"not UTF-8 text ({exc.reason})")]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if USERNAME_COLUMN not in header:
            message = "the first line must be a header with a username column"
            raise BulkEnableRejected([LineProblem(1, message)])
        column = header.index(USERNAME_COLUMN)
        found, problems = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines are fine
            name = row[column].strip() if column < len(row) else ""
            if name:
                found.append((reader.line_num, name))
            else:
                problems.append(LineProblem(reader.line_num, "no username on this line"))
    except csv.Error as exc:
        raise BulkEnableRejected([LineProblem(reader.line_num, f"not valid CSV: {exc}")]) from None
    if problems:
        raise BulkEnableRejected(problems)
    if not found:
        raise BulkEnableRejected([LineProblem(1, "the file lists no users")])
    return found


class ConsoleUsersService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        console: ConsoleSettingsService,
        access: MethodGate,
    ) -> None:
        self._db = sessions
        self._clock = clock
        self._console = console
        self._access = access

    async def search(
        self, query: str = "", *, offset: int = 0, limit: int = 20
    ) -> tuple[list[UserStatus], int]:
        """A page of users whose username, name or e-mail contains `query`, and the total."""
        config = await self._console.two_factor()
        async with self._db.begin() as db:
            rows, total = await Users(db).search(query.strip(), offset=offset, limit=limit)
            return [await self._status(db, row, config) for row in rows], total

    async def status(self, username: str) -> UserStatus | None:
        config = await self._console.two_factor()
        async with self._db.begin() as db:
            row = await Users(db).by_name(username)
            return await self._status(db, row, config) if row is not None else None

    async def groups(
        self, query: str = "", *, offset: int = 0, limit: int = 20
    ) -> tuple[list[GroupLine], int]:
        async with self._db.begin() as db:
            rows, total = await GroupSearch(db).search(query.strip(), offset=offset, limit=limit)
        return [GroupLine(group.name, group.twofa_enabled, count) for group, count in rows], total

    async def enable_from_csv(
        self, content: bytes, actor: str, client: ClientInfo = CLI
    ) -> BulkEnableResult:
        """Switches 2FA on for every user the file lists, in one transaction with an audit
        record per change. Any unknown user or bad line raises `BulkEnableRejected` listing
        all of them, and nothing changes."""
        listed = usernames_in_csv(content)
        async with self._db.begin() as db:
            users, problems = {}, []
            for line, name in listed:
                row = await Users(db).by_name(name)
                if row is None:
                    problems.append(LineProblem(line, f"no user {name!r}"))
                else:
                    users[name] = row
            if problems:
                raise BulkEnableRejected(problems)
            switched, already = [], []
            for name, row in users.items():
                if row.twofa_enabled:
                    already.append(name)
                    continue
                row.twofa_enabled = True
                switched.append(name)
                audit.record(
                    db,
                    self._clock,
                    "policy_user",
                    "ok",
                    username=name,
                    client=client,
                    actor=actor,
                    before=False,
                    after=True,
                    source="csv",
                )
        return BulkEnableResult(tuple(switched), tuple(already))

    def _title(self, code: str) -> str:
        try:
            return self._access.title_of(code)
        except UnknownMethod:  # a credential of a method this server no longer offers
            return code

    async def _status(self, db: AsyncSession, user: UserRow, config: TwoFactorConfig) -> UserStatus:
        now = self._clock.now()
        users = Users(db)
        enabled_groups = await users.group_names(user.id, twofa_only=True)
        everyone = config.enforcement is Enforcement.EVERYONE
        reason = required_because(everyone, user.twofa_enabled, enabled_groups)
        methods = [self._title(code) for code in await enrolled_methods(db, user.id)]
        locked_until = await any_lockout_ends(db, user.username, now)
        grace = grace_phrase(config, user.enrolment_postponements, user.grace_started_at, now)
        return UserStatus(
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            enabled=user.enabled,
            is_admin=user.is_admin,
            groups=tuple(await users.group_names(user.id)),
            twofa_switched_on=user.twofa_enabled,
            required=bool(reason),
            explanation=explain(
                enabled=user.enabled,
                required_reason=reason,
                enrolled_methods=methods,
                locked_until=locked_until,
                grace=grace,
                now=now,
                first_method=self._title(config.first_method),
            ),
            locked_until=locked_until,
        )

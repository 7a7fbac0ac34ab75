"""Access rules an admin manages in the console (and `twofa access rules`, and the API): list,
add, edit, remove and reorder them. They are checked like the settings file's rules, and are
evaluated after them: the file is the operator's pinned baseline, the console adds to it.

Every change is one transaction that first raises the rules' version (`lock_and_bump`), so
concurrent admins apply their changes one after the other, the order never tears, nothing is
half-saved, and every node sees the new version at its next once-a-second check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.config import ACCESS_POLICIES, AccessRuleSettings, AccessSettings
from twofa.domain.access import RuleSet, domain_pattern_problem, with_console_rules
from twofa.domain.client import ClientInfo
from twofa.errors import NotFound
from twofa.services.settings.console import SettingsRejected
from twofa.services.state import audit
from twofa.storage.access_rules import AccessRules
from twofa.storage.tables import AccessRuleRow

AUDIT_KIND: Final = "access_rule"
MAX_ITEMS: Final = 50  # per list: a rule naming more is better written as a group or a network
MAX_NAME: Final = 150
MAX_PATH: Final = 300


class UnknownAccessRule(NotFound):
    def __init__(self, rule_id: int) -> None:
        self.rule_id = rule_id
        super().__init__(f"no console access rule with id {rule_id}")

    @property
    def user_message(self) -> str:
        """Rules are edited by several admins: the likely cause, and what to do."""
        return f"{self}: another admin may have deleted it. Reload the page."


@dataclass(frozen=True)
class RuleEdit:
    """A rule as an admin typed it (lists already split); checked by `checked_rule`."""

    domains: tuple[str, ...]
    policy: str
    paths: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsoleRule:
    id: int
    position: int  # 1-based among the console's rules (the file's rules come before)
    rule: AccessRuleSettings
    created_at: datetime
    updated_at: datetime
    updated_by: str


def _list_problem(values: Sequence[str], limit: int, what: str) -> str | None:
    if len(values) > MAX_ITEMS:
        return f"at most {MAX_ITEMS} {what}s"
    for value in values:
        if not value or len(value) > limit or any(ch.isspace() or ch == "\x00" for ch in value):
            return f"{value!r}: a {what} is 1 to {limit} characters without spaces"
    return None


def _network_problem(values: Sequence[str]) -> str | None:
    if len(values) > MAX_ITEMS:
        return f"at most {MAX_ITEMS} networks"
    for value in values:
        try:
            ipaddress.ip_network(value)
        except ValueError:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                return f"{value!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            return f"{value!r} has host bits set: did you mean {loose}?"
    return None


def rule_problems(edit: RuleEdit, access: AccessSettings) -> dict[str, str]:
    """What is wrong with each field of `edit` (empty: nothing), all at once."""
    problems: dict[str, str] = {}
    if not edit.domains:
        problems["domains"] = "name at least one domain"
    elif len(edit.domains) > MAX_ITEMS:
        problems["domains"] = f"at most {MAX_ITEMS} domains"
    else:
        for domain in edit.domains:
            problem = domain_pattern_problem(domain, access.domains)
            if problem:
                problems["domains"] = problem
                break
    if edit.policy not in ACCESS_POLICIES:
        problems["policy"] = f"policy must be one of {', '.join(ACCESS_POLICIES)}"
    paths = _list_problem(edit.paths, MAX_PATH, "path")
    if paths is None and any(not path.startswith("/") for path in edit.paths):
        paths = "a path pattern starts with / (e.g. /rest/*)"
    for name, problem in (
        ("paths", paths),
        ("users", _list_problem(edit.users, MAX_NAME, "user name")),
        ("groups", _list_problem(edit.groups, MAX_NAME, "group name")),
        ("networks", _network_problem(edit.networks)),
    ):
        if problem:
            problems[name] = problem
    return problems


_SETTINGS_FIELDS: Final = {"domain": "domains", "resources": "paths"}


def checked_rule(edit: RuleEdit, access: AccessSettings) -> AccessRuleSettings:
    """The rule as the settings file would hold it, or SettingsRejected naming each field."""
    problems = rule_problems(edit, access)
    if problems:
        raise SettingsRejected(problems)
    try:  # the settings file's own validation has the last word
        return AccessRuleSettings(
            domain=edit.domains,
            policy=edit.policy,
            resources=edit.paths,
            users=edit.users,
            groups=edit.groups,
            networks=edit.networks,  # type: ignore[arg-type]  # validated into networks
        )
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "domains"
            problems.setdefault(_SETTINGS_FIELDS.get(field, field), error["msg"])
        raise SettingsRejected(problems) from None


def _rule_of(row: AccessRuleRow) -> AccessRuleSettings:
    return AccessRuleSettings.model_validate(
        {
            "domain": row.domains,
            "policy": row.policy,
            "resources": row.paths,
            "users": row.users,
            "groups": row.groups,
            "networks": row.networks,
        }
    )


def rule_fields(rule: AccessRuleSettings) -> dict[str, Any]:
    """A rule as plain JSON values: for the audit log, the CLI's --json and the REST API."""
    return {
        "domains": list(rule.domain),
        "policy": rule.policy,
        "paths": list(rule.resources),
        "users": list(rule.users),
        "groups": list(rule.groups),
        "networks": [str(network) for network in rule.networks],
    }


def _console_rules(rows: Sequence[AccessRuleRow]) -> list[ConsoleRule]:
    return [
        ConsoleRule(
            row.id, index + 1, _rule_of(row), row.created_at, row.updated_at, row.updated_by
        )
        for index, row in enumerate(rows)
    ]


async def _placed(
    rules: AccessRules, row: AccessRuleRow, position: int | None
) -> list[ConsoleRule]:
    """Puts `row` at `position` (1-based, clamped; None: where it is) and numbers every rule
    again, so positions stay 1..n with no gaps. Returns the new order."""
    ordered = list(await rules.in_order())
    if position is not None:
        ordered.remove(row)
        ordered.insert(min(max(position, 1), len(ordered) + 1) - 1, row)
    for index, each in enumerate(ordered):
        each.position = index + 1
    await rules.flush()
    return _console_rules(ordered)


class AccessRuleService:
    def __init__(
        self, db: async_sessionmaker[AsyncSession], clock: Clock, access: AccessSettings
    ) -> None:
        self._db = db
        self._clock = clock
        self._access = access

    @property
    def file_rules(self) -> tuple[AccessRuleSettings, ...]:
        return self._access.rules

    async def console_rules(self) -> list[ConsoleRule]:
        async with self._db.begin() as db:
            return _console_rules(await AccessRules(db).in_order())

    async def version(self) -> int:
        """Changes with every console change to the rules; nodes compare it to reload."""
        async with self._db.begin() as db:
            return await AccessRules(db).version()

    async def rule_set(self) -> RuleSet:
        """Every rule in evaluation order: the file's, then the console's."""
        async with self._db.begin() as db:
            rules = AccessRules(db)
            version = await rules.version()
            rows = await rules.in_order()
        console = [(row.id, _rule_of(row)) for row in rows]
        return with_console_rules(self._access.rules, console, version)

    async def add(
        self, edit: RuleEdit, actor: str, client: ClientInfo, position: int | None = None
    ) -> ConsoleRule:
        """Adds the rule last among the console's rules, or at `position` (1-based)."""
        rule = await self._checked(edit, actor, client)
        now = self._clock.now()
        async with self._db.begin() as db:
            rules = AccessRules(db)
            await rules.lock_and_bump(now)
            row = AccessRuleRow(
                position=await rules.last_position() + 1,
                created_at=now,
                updated_at=now,
                updated_by=actor,
                **rule_fields(rule),
            )
            rules.add(row)
            await db.flush()
            ordered = await _placed(rules, row, position)
            where = next(found.position for found in ordered if found.id == row.id)
            self._audit(
                db, "added", actor, client, rule_id=row.id, position=where, after=rule_fields(rule)
            )
        return next(found for found in ordered if found.id == row.id)

    async def update(
        self,
        rule_id: int,
        edit: RuleEdit,
        actor: str,
        client: ClientInfo,
        position: int | None = None,
    ) -> ConsoleRule:
        """Replaces the rule; it keeps its place unless `position` (1-based) is given."""
        rule = await self._checked(edit, actor, client, rule_id=rule_id)
        now = self._clock.now()
        async with self._db.begin() as db:
            rules = AccessRules(db)
            await rules.lock_and_bump(now)
            row = await self._existing(rules, rule_id)
            before = rule_fields(_rule_of(row))
            for name, value in rule_fields(rule).items():
                setattr(row, name, value)
            row.updated_at, row.updated_by = now, actor
            ordered = await _placed(rules, row, position)
            saved = next(found for found in ordered if found.id == rule_id)
            self._audit(
                db,
                "updated",
                actor,
                client,
                rule_id=rule_id,
                position=saved.position,
                before=before,
                after=rule_fields(rule),
            )
        return saved

    async def remove(self, rule_id: int, actor: str, client: ClientInfo) -> None:
        async with self._db.begin() as db:
            rules = AccessRules(db)
            await rules.lock_and_bump(self._clock.now())
            row = await self._existing(rules, rule_id)
            before = rule_fields(_rule_of(row))
            await rules.remove(rule_id)
            self._audit(db, "removed", actor, client, rule_id=rule_id, before=before)

    async def move(
        self, rule_id: int, position: int, actor: str, client: ClientInfo
    ) -> list[ConsoleRule]:
        """Puts the rule at `position` (1-based, clamped to the list) among the console's
        rules; the others keep their relative order. Returns the new order."""
        async with self._db.begin() as db:
            rules = AccessRules(db)
            await rules.lock_and_bump(self._clock.now())
            row = await self._existing(rules, rule_id)
            before = next(
                r.position for r in _console_rules(await rules.in_order()) if r.id == rule_id
            )
            ordered = await _placed(rules, row, position)
            after = next(found.position for found in ordered if found.id == rule_id)
            self._audit(db, "moved", actor, client, rule_id=rule_id, before=before, after=after)
            return ordered

    async def _checked(
        self, edit: RuleEdit, actor: str, client: ClientInfo, rule_id: int | None = None
    ) -> AccessRuleSettings:
        try:
            return checked_rule(edit, self._access)
        except SettingsRejected as rejected:
            async with self._db.begin() as db:
                self._audit(
                    db, "rejected", actor, client, rule_id=rule_id, problems=rejected.problems
                )
            raise

    @staticmethod
    async def _existing(rules: AccessRules, rule_id: int) -> AccessRuleRow:
        row = await rules.get(rule_id)
        if row is None:
            raise UnknownAccessRule(rule_id)
        return row

    def _audit(
        self, db: AsyncSession, outcome: str, actor: str, client: ClientInfo, **detail: Any
    ) -> None:
        audit.record(db, self._clock, AUDIT_KIND, outcome, username=actor, client=client, **detail)

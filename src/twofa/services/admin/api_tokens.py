"""Bearer tokens for the REST API: created on the CLI or through the API, shown once, kept only
as a SHA-256, revocable and always expiring. A token acts within its scopes (domain.api_scopes),
and a token never makes one with a scope it lacks. One made by an admin answers to that admin:
it stops working the moment the account is no longer an enabled admin. The audit log names a
token `token:<name>`, so each token's changes can be told apart."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.api_scopes import ALL_SCOPES, Scope, parse_scopes, scopes_text
from twofa.domain.client import CLI, ClientInfo
from twofa.errors import Conflict, Forbidden, Invalid, NotFound, TwofaError
from twofa.security.tokens import new_token, same_token, token_digest
from twofa.services.state import audit
from twofa.storage.repositories import ApiTokens, Users
from twofa.storage.tables import ApiTokenRow

TOKEN_PREFIX: Final = "twofa_"  # noqa: S105 (a marker that makes leaked tokens greppable)
DEFAULT_DAYS: Final = 90
MAX_DAYS: Final = 365
MAX_NAME_LENGTH: Final = 100
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)  # at most one write per token and minute
_TOKEN_SHAPE = re.compile(r"^twofa_(?P<id>[0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


class ApiTokenError(TwofaError):
    """A token action that cannot be done as asked: the family, never raised itself, as its
    members fall in different categories."""


class UnknownApiToken(ApiTokenError, NotFound):
    """No token has this id."""


class ApiTokenNameTaken(ApiTokenError, Conflict):
    """An active token already has this name; names must tell tokens apart in the audit log."""

    @property
    def fields(self) -> Mapping[str, str]:
        return {"name": str(self)}


class ScopeBeyondCreator(ApiTokenError, Forbidden):
    """A token asked for a token with a scope it does not hold itself."""


class ScopeMissing(ApiTokenError, Forbidden):
    """The token is good, but the route needs a scope it does not hold."""

    def __init__(self, needed: Scope | None, message: str) -> None:
        self.needed = needed
        super().__init__(message)


class InvalidApiTokenRequest(ApiTokenError, Invalid):
    """A bad name or lifetime; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message, {field: message})


@dataclass(frozen=True)
class ApiTokenInfo:
    """Everything about a token except its secret, which is never kept."""

    id: str
    name: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    scopes: frozenset[Scope]
    owner: str | None  # the admin it answers to; None: made on the command line

    def active_at(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True)
class IssuedToken:
    """The one moment the secret exists outside the caller's hands: show it, then drop it."""

    token: str
    info: ApiTokenInfo


@dataclass(frozen=True)
class ApiCaller:
    """Who an accepted bearer token acts for, and what it may do."""

    token_id: str
    token_name: str
    created_by: str
    scopes: frozenset[Scope]
    owner_user_id: int | None

    @property
    def actor(self) -> str:
        return f"token:{self.token_name}"


def token_id_of(bearer: str) -> str | None:
    """The id inside a well-formed token (not secret), or None for anything else."""
    found = _TOKEN_SHAPE.match(bearer)
    return found.group("id") if found else None


def token_name_problem(name: str) -> str | None:
    if not name or len(name) > MAX_NAME_LENGTH:
        return f"1 to {MAX_NAME_LENGTH} characters"
    if not name.isprintable():
        return "no control characters"
    return None


def _info(row: ApiTokenRow, owner: str | None) -> ApiTokenInfo:
    return ApiTokenInfo(
        id=row.id,
        name=row.name,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
        scopes=parse_scopes([row.scopes]),
        owner=owner,
    )


class ApiTokenService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = sessions
        self._clock = clock

    async def create(
        self,
        name: str,
        *,
        created_by: str,
        scopes: frozenset[Scope],
        days: int = DEFAULT_DAYS,
        client: ClientInfo = CLI,
        by_token: ApiCaller | None = None,
        owner: str | None = None,
    ) -> IssuedToken:
        """`created_by` is the creator's audit actor: an admin's name, `cli` or `token:<name>`.
        A token made `by_token` holds none of the scopes that token lacks and answers to its
        admin; one made on the command line answers to `owner` (an enabled admin) if named."""
        name = name.strip()
        if problem := token_name_problem(name):
            raise InvalidApiTokenRequest("name", f"invalid token name: {problem}")
        if not 1 <= days <= MAX_DAYS:
            raise InvalidApiTokenRequest("days", f"a token lives 1 to {MAX_DAYS} days")
        if not scopes:
            raise InvalidApiTokenRequest("scopes", "a token needs at least one scope")
        beyond = scopes - (by_token.scopes if by_token else ALL_SCOPES)
        if beyond:
            raise ScopeBeyondCreator(
                f"a token cannot make a token with a scope it does not have: {scopes_text(beyond)}"
            )
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{new_token()}"
        now = self._clock.now()
        expires_at = now + timedelta(days=days)
        async with self._db.begin() as db:
            owner_id = by_token.owner_user_id if by_token else await self._owner_id(db, owner)
            repository = ApiTokens(db)
            if by_token is not None:  # never outliving the token that makes it
                parent = await repository.get(by_token.token_id)
                if parent is not None:
                    expires_at = min(expires_at, parent.expires_at)
            if any(row.name == name and _active(row, now) for row in await repository.all()):
                raise ApiTokenNameTaken(f"an active token is already named {name!r}")
            row = ApiTokenRow(
                id=token_id,
                name=name,
                token_hash=token_digest(token),
                created_by=created_by,
                created_at=now,
                expires_at=expires_at,
                revoked_at=None,
                last_used_at=None,
                scopes=scopes_text(scopes),
                owner_user_id=owner_id,
                parent_id=by_token.token_id if by_token else None,
            )
            repository.add(row)
            self._audit(
                db, "api_token_create", created_by, client, row, days=days, scopes=row.scopes
            )
            return IssuedToken(token, await self._info(db, row))

    async def tokens(self) -> list[ApiTokenInfo]:
        """Every token, oldest first, active or not."""
        async with self._db.begin() as db:
            return [await self._info(db, row) for row in await ApiTokens(db).all()]

    async def get(self, token_id: str) -> ApiTokenInfo:
        async with self._db.begin() as db:
            return await self._info(db, await self._row(db, token_id))

    @staticmethod
    async def _owner_id(db: AsyncSession, owner: str | None) -> int | None:
        if owner is None:
            return None
        user = await Users(db).by_name(owner)
        if user is None or not (user.is_admin and user.enabled):
            raise InvalidApiTokenRequest("owner", f"{owner!r} is not an enabled admin")
        return user.id

    @staticmethod
    async def _info(db: AsyncSession, row: ApiTokenRow) -> ApiTokenInfo:
        owner = await Users(db).by_id(row.owner_user_id) if row.owner_user_id else None
        return _info(row, owner.username if owner else None)

    async def revoke(self, token_id: str, *, actor: str, client: ClientInfo = CLI) -> ApiTokenInfo:
        """Revokes the token and every token made from it, at any depth (a stolen token's
        offspring go with it). Revoking twice keeps the first revocation time and writes no
        second record."""
        async with self._db.begin() as db:
            row = await self._row(db, token_id)
            if row.revoked_at is None:
                now = row.revoked_at = self._clock.now()
                self._audit(db, "api_token_revoke", actor, client, row)
                parents = [row.id]
                while children := await ApiTokens(db).active_children(parents):
                    for child in children:
                        child.revoked_at = now
                        self._audit(db, "api_token_revoke", actor, client, child, via=row.id)
                    parents = [child.id for child in children]
            return await self._info(db, row)

    async def authenticate(
        self, bearer: str, *, client: ClientInfo = CLI, path: str = ""
    ) -> ApiCaller | None:
        """The caller behind a bearer token, or None when it is malformed, unknown, revoked or
        expired. A refused token of the right shape is audited (by id, never the secret)."""
        token_id = token_id_of(bearer)
        if token_id is None:
            return None
        now = self._clock.now()
        async with self._db.begin() as db:
            row = await ApiTokens(db).get(token_id)
            refusal = self._refusal(row, bearer, now) or await self._owner_refusal(db, row)
            if refusal is not None:
                audit.record(
                    db,
                    self._clock,
                    "api_token_refused",
                    refusal,
                    client=client,
                    token_id=token_id,
                    path=path[:200],
                )
                return None
            assert row is not None
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                row.last_used_at = now
            return ApiCaller(
                row.id, row.name, row.created_by, parse_scopes([row.scopes]), row.owner_user_id
            )

    async def require_scope(
        self, caller: ApiCaller, needed: Scope | None, *, client: ClientInfo, path: str
    ) -> None:
        """Refuses, audited, a route needing a scope `caller` lacks (`needed` None: a route
        no scope opens, see `domain.api_scopes.scope_needed`)."""
        if needed is not None and needed in caller.scopes:
            return
        async with self._db.begin() as db:
            audit.record(
                db,
                self._clock,
                "api_token_refused",
                "scope",
                client=client,
                actor=caller.actor,
                token_id=caller.token_id,
                path=path[:200],
                needed=needed.value if needed else "",
            )
        if needed is None:
            raise ScopeMissing(None, "no token may use this route")
        raise ScopeMissing(needed, f"this needs a token with the {needed.value!r} scope")

    @staticmethod
    async def _owner_refusal(db: AsyncSession, row: ApiTokenRow | None) -> str | None:
        """A token answers to its admin: once the account is disabled or no longer an admin,
        the token is refused (a deleted account takes its tokens with it)."""
        if row is None or row.owner_user_id is None:
            return None
        owner = await Users(db).by_id(row.owner_user_id)
        if owner is None or not (owner.is_admin and owner.enabled):
            return "owner_not_admin"
        return None

    @staticmethod
    def _refusal(row: ApiTokenRow | None, bearer: str, now: datetime) -> str | None:
        if row is None or not same_token(row.token_hash, token_digest(bearer)):
            return "unknown"
        if row.revoked_at is not None:
            return "revoked"
        if now >= row.expires_at:
            return "expired"
        return None

    async def _row(self, db: AsyncSession, token_id: str) -> ApiTokenRow:
        row = await ApiTokens(db).get(token_id)
        if row is None:
            raise UnknownApiToken(f"no API token {token_id!r}")
        return row

    def _audit(
        self,
        db: AsyncSession,
        kind: str,
        actor: str,
        client: ClientInfo,
        row: ApiTokenRow,
        **detail: object,
    ) -> None:
        audit.record(
            db,
            self._clock,
            kind,
            "ok",
            username="",
            client=client,
            actor=actor,
            token_id=row.id,
            name=row.name,
            expires_at=row.expires_at.isoformat(),
            **detail,
        )


def _active(row: ApiTokenRow, now: datetime) -> bool:
    return row.revoked_at is None and now < row.expires_at

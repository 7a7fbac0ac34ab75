"""The registry of applications users sign in to through twofa: add, list, show, edit, rotate
a secret, remove. A confidential client's secret is shown once and kept as a SHA-256: it is a
random 256-bit token, so a slow hash would buy nothing against guessing and would put argon2
on every token request. Every change is audited."""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.access import AccessRequest, AccessRule, Decision, Policy, decide
from twofa.domain.client import CLI, ClientInfo
from twofa.security.tokens import new_token, same_token, token_digest
from twofa.services.idp.errors import InvalidApplication, UnknownApplication
from twofa.services.state import audit
from twofa.storage.applications import Applications
from twofa.storage.tables import ApplicationRow

OIDC: Final = "oidc"
SAML: Final = "saml"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}")  # whole name: fullmatch


@dataclass(frozen=True)
class Application:
    """An application as the registry shows it: everything but its secret."""

    id: int
    name: str
    protocol: str
    client_id: str
    public: bool
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    allowed_users: tuple[str, ...]
    allowed_groups: tuple[str, ...]
    second_factor_required: bool
    skip_consent: bool
    created_at: datetime
    updated_at: datetime
    # Where a signed logout token is POSTed when a twofa session it signed in through ends
    # (OpenID Connect Back-Channel Logout 1.0); None: the application is not told.
    backchannel_logout_uri: str | None = None

    @property
    def access_rules(self) -> tuple[AccessRule, ...]:
        """Who may sign in, as rules of the engine that decides forward-auth
        (domain.access): anyone when no user or group is listed, else a listed user or a
        member of a listed group, and nobody else. The application's "domain" is its client
        id, which no browser request carries."""
        scope = (self.client_id,)
        policy = Policy.TWO_FACTOR if self.second_factor_required else Policy.ONE_FACTOR
        if not self.allowed_users and not self.allowed_groups:
            return (AccessRule(scope, policy),)
        listed = AccessRule(scope, policy, users=self.allowed_users, groups=self.allowed_groups)
        return (listed, AccessRule(scope, Policy.DENY))

    def decide(self, username: str, groups: Sequence[str]) -> Decision:
        """The engine's decision for this user; `twofa access explain --application` shows
        which rule made it."""
        request = AccessRequest(self.client_id, "/", "", username, tuple(groups))
        return decide(self.access_rules, Policy.DENY, request)

    def admits(self, username: str, groups: Sequence[str]) -> bool:
        """The one place that says who may sign in to this application (both protocols ask
        it through services.idp.admission)."""
        return self.decide(username, groups).policy is not Policy.DENY


@dataclass(frozen=True)
class ApplicationEdit:
    """What an admin may change on a registered application: all but its client id and whether
    it is public (a client made public would keep a secret it no longer uses, one made
    confidential would have none: remove it and add it again)."""

    name: str
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()
    allowed_users: Sequence[str] = ()
    allowed_groups: Sequence[str] = ()
    second_factor_required: bool = True
    skip_consent: bool = True
    backchannel_logout_uri: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewApplication(ApplicationEdit):
    """What an admin gives to register an OpenID Connect client."""

    public: bool = False


@dataclass(frozen=True)
class IssuedApplication:
    """The one moment a client secret exists outside the caller's hands (None: public)."""

    application: Application
    client_secret: str | None


def application_of(row: ApplicationRow) -> Application:
    return Application(
        id=row.id,
        name=row.name,
        protocol=row.protocol,
        client_id=row.client_id,
        public=row.public,
        redirect_uris=tuple(row.redirect_uris),
        post_logout_redirect_uris=tuple(row.post_logout_redirect_uris),
        allowed_users=tuple(row.allowed_users),
        allowed_groups=tuple(row.allowed_groups),
        second_factor_required=row.second_factor_required,
        skip_consent=row.skip_consent,
        created_at=row.created_at,
        updated_at=row.updated_at,
        backchannel_logout_uri=row.backchannel_logout_uri,
    )


def redirect_uri_problem(uri: str) -> str | None:
    """A redirect URI must be absolute, without a fragment (OIDC Core §3.1.2.1), and https
    except on a loopback host (native apps, RFC 8252 §7.3, and development)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return f"{uri!r} is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{uri!r} must be an absolute http(s) URL"
    if parts.fragment or "#" in uri:
        return f"{uri!r} must not have a fragment"
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme == "http" and not loopback:
        return f"{uri!r} must use https (http only on a loopback host)"
    return None


def check_name(name: str) -> None:
    """The rule for every application's name, whatever its protocol."""
    if not _NAME.fullmatch(name):
        raise InvalidApplication("name", "1 to 100 letters, digits, spaces, '.', '_' or '-'")


def _checked(new: ApplicationEdit) -> None:
    check_name(new.name)
    if not new.redirect_uris:
        raise InvalidApplication("redirect_uris", "at least one redirect URI")
    for field, uris in (
        ("redirect_uris", new.redirect_uris),
        ("post_logout_redirect_uris", new.post_logout_redirect_uris),
    ):
        for uri in uris:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise InvalidApplication(field, problem)
    if new.backchannel_logout_uri is not None:
        problem = redirect_uri_problem(new.backchannel_logout_uri)
        if problem is not None:  # the same rule: https, or http on a loopback host
            raise InvalidApplication("backchannel_logout_uri", problem)


def verify_secret(row: ApplicationRow, given: str) -> bool:
    if row.public or row.client_secret_hash is None:
        return False
    return same_token(row.client_secret_hash, token_digest(given))


class ApplicationService:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(
        self, new: NewApplication, *, actor: str, client: ClientInfo = CLI
    ) -> IssuedApplication:
        _checked(new)
        now = self._clock.now()
        secret = None if new.public else new_token()
        with name_kept_once(new.name):
            async with self._db.begin() as db:
                applications = Applications(db)
                await check_name_free(db, new.name)
                row = ApplicationRow(
                    name=new.name,
                    protocol=OIDC,
                    client_id=secrets.token_hex(16),
                    client_secret_hash=None if secret is None else token_digest(secret),
                    public=new.public,
                    redirect_uris=list(new.redirect_uris),
                    post_logout_redirect_uris=list(new.post_logout_redirect_uris),
                    allowed_users=sorted(set(new.allowed_users)),
                    allowed_groups=sorted(set(new.allowed_groups)),
                    second_factor_required=new.second_factor_required,
                    skip_consent=new.skip_consent,
                    backchannel_logout_uri=new.backchannel_logout_uri,
                    created_at=now,
                    updated_at=now,
                )
                applications.add(row)
                await db.flush()
                audit.record(
                    db,
                    self._clock,
                    "application",
                    "added",
                    username=actor,
                    client=client,
                    application=row.name,
                    client_id=row.client_id,
                    public=row.public,
                )
                return IssuedApplication(application_of(row), secret)

    async def update(
        self,
        name_or_client_id: str,
        edit: ApplicationEdit,
        *,
        actor: str,
        client: ClientInfo = CLI,
    ) -> Application:
        """Checked as `add` checks; the client id and secret stay, so relying parties carry
        on. The audit record names the fields that changed."""
        _checked(edit)
        with name_kept_once(edit.name):
            async with self._db.begin() as db:
                row = await _find(db, name_or_client_id)
                _oidc_only(row)
                await check_name_free(db, edit.name, current=row.name)
                changed = _apply(row, edit)
                row.updated_at = self._clock.now()
                audit.record(
                    db,
                    self._clock,
                    "application",
                    "updated",
                    username=actor,
                    client=client,
                    application=row.name,
                    client_id=row.client_id,
                    changed=changed,
                )
                return application_of(row)

    async def applications(self) -> list[Application]:
        async with self._db() as db:
            return [application_of(row) for row in await Applications(db).all()]

    async def show(self, name_or_client_id: str) -> Application:
        async with self._db() as db:
            return application_of(await _find(db, name_or_client_id))

    async def rotate_secret(
        self, name_or_client_id: str, *, actor: str, client: ClientInfo = CLI
    ) -> IssuedApplication:
        """A new secret, shown once; the old one stops working at once."""
        secret = new_token()
        async with self._db.begin() as db:
            row = await _find(db, name_or_client_id)
            _oidc_only(row)
            if row.public:
                raise InvalidApplication("public", f"{row.name!r} is a public client: no secret")
            row.client_secret_hash = token_digest(secret)
            row.updated_at = self._clock.now()
            audit.record(
                db,
                self._clock,
                "application",
                "secret_rotated",
                username=actor,
                client=client,
                application=row.name,
                client_id=row.client_id,
            )
            return IssuedApplication(application_of(row), secret)

    async def remove(
        self, name_or_client_id: str, *, actor: str, client: ClientInfo = CLI
    ) -> Application:
        async with self._db.begin() as db:
            row = await _find(db, name_or_client_id)
            gone = application_of(row)
            await Applications(db).remove(row.id)
            audit.record(
                db,
                self._clock,
                "application",
                "removed",
                username=actor,
                client=client,
                application=gone.name,
                client_id=gone.client_id,
            )
            return gone


def _name_taken(name: str) -> InvalidApplication:
    return InvalidApplication("name", f"an application named {name!r} exists")


async def check_name_free(db: AsyncSession, name: str, current: str | None = None) -> None:
    """That no other application (of either protocol) has `name`; `current` is the name of
    the application being edited, which it may keep."""
    if name != current and await Applications(db).by_name(name) is not None:
        raise _name_taken(name)


@contextmanager
def name_kept_once(name: str) -> Iterator[None]:
    """Another admin's add or rename to the same name between the check and the commit: the
    database's unique name refuses it, and the admin is told as the check would tell."""
    try:
        yield
    except IntegrityError:
        raise _name_taken(name) from None


def _apply(row: ApplicationRow, edit: ApplicationEdit) -> list[str]:
    """Writes the edit onto the row; the names of the columns whose value changed."""
    wanted: dict[str, object] = {
        "name": edit.name,
        "redirect_uris": list(edit.redirect_uris),
        "post_logout_redirect_uris": list(edit.post_logout_redirect_uris),
        "allowed_users": sorted(set(edit.allowed_users)),
        "allowed_groups": sorted(set(edit.allowed_groups)),
        "second_factor_required": edit.second_factor_required,
        "skip_consent": edit.skip_consent,
        "backchannel_logout_uri": edit.backchannel_logout_uri,
    }
    changed = [column for column, value in wanted.items() if getattr(row, column) != value]
    for column in changed:
        setattr(row, column, wanted[column])
    return changed


def _oidc_only(row: ApplicationRow) -> None:
    """Redirect URIs and secrets are OpenID Connect's: a SAML service provider is changed
    through its metadata (services.idp.saml)."""
    if row.protocol != OIDC:
        raise InvalidApplication("protocol", f"{row.name!r} is a {row.protocol} application")


async def _find(db: AsyncSession, name_or_client_id: str) -> ApplicationRow:
    applications = Applications(db)
    row = await applications.by_client_id(name_or_client_id)
    row = row or await applications.by_name(name_or_client_id)
    if row is None:
        raise UnknownApplication(f"no application {name_or_client_id!r}")
    return row

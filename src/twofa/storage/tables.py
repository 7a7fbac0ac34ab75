"""The database schema as SQLAlchemy 2 typed tables. Migrations in `storage/migrations` must
match this file; `tests/unit/storage/test_migrations.py` checks that they do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    inspect,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which forgets zones) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


def table_of(row_class: type[Base]) -> Table:
    """The Core table of a mapped class: a statement on it skips the ORM's bookkeeping
    (identity map, session synchronisation), for the writes on the hot paths."""
    table = row_class.__table__
    assert isinstance(table, Table)
    return table


async def insert_now(db: AsyncSession, row: Base) -> None:
    """Writes a new `row` with one Core INSERT now, instead of through the unit of work at
    the next flush (which costs more than the INSERT on the hot paths). The session does not
    track the row afterwards: whoever needs it in the same transaction reads it again."""
    table = table_of(type(row))
    given = inspect(row).dict
    await db.execute(insert(table), {c.key: given[c.key] for c in table.columns if c.key in given})


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    twofa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    enrolment_postponements: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    grace_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    default_method: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Who vouches for the password: "local" (twofa's own hash) or an external directory's
    # name; a directory never signs in a user another directory (or twofa) owns.
    directory: Mapped[str] = mapped_column(String(32), default="local", server_default="local")
    # When a directory user's groups were last copied from their directory (sign-in or a
    # refresh during a session); None for local users and before the first sync.
    groups_synced_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class GroupRow(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(150), unique=True)
    twofa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)


class MembershipRow(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class DuoEnrolmentRow(Base):
    """A user's Duo Push set-up: pending while `configured_at` is empty."""

    __tablename__ = "duo_enrolments"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    duo_user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    activation_code: Mapped[str | None] = mapped_column(String(200), nullable=True)
    activation_barcode: Mapped[str | None] = mapped_column(Text, nullable=True)
    activation_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    preferred_device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    configured_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SessionRow(Base):
    """A browser session; `id` is the SHA-256 of the cookie value, never the value itself."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    level: Mapped[int] = mapped_column(Integer, default=0)
    csrf_token: Mapped[str] = mapped_column(String(64))
    next_url: Mapped[str] = mapped_column(Text, default="/")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    second_factor_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ChallengeRow(Base):
    """One second-factor attempt. It succeeds at most once: `consumed_at` is set by a
    conditional UPDATE, never by read-then-write."""

    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="pending")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # What the server keeps between start and verify (a sealed draft secret, a hashed e-mail
    # code, the questions asked, a WebAuthn challenge); never sent to the browser as is.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_challenges_user_created", "user_id", "created_at"),)


class CredentialRow(Base):
    """One enrolled second factor of a user (a TOTP app, a set of backup codes, a security
    key...). `version` grows with every state change, so two verifications racing on one
    credential cannot both apply their new state (TOTP step, WebAuthn sign count)."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(100), default="")
    secret_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # NewCredential.unique_id: unique per method across all users (NULLs never collide).
    unique_id: Mapped[str | None] = mapped_column(String(1400), nullable=True)

    __table_args__ = (
        Index("ix_credentials_user_method", "user_id", "method"),
        Index("ux_credentials_method_unique_id", "method", "unique_id", unique=True),
    )


class CredentialItemRow(Base):
    """A hashed part of a credential: one backup code, one security answer. Single-use items
    are consumed by a conditional UPDATE of `used_at`."""

    __tablename__ = "credential_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credential_id: Mapped[int] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    slot: Mapped[str] = mapped_column(String(300))
    digest: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RememberedDeviceRow(Base):
    """A browser that may skip the second factor until `expires_at`; `id` is the SHA-256 of
    the random token in its cookie."""

    __tablename__ = "remembered_devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(300), default="")
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ThrottleRow(Base):
    __tablename__ = "throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(150), default="", index=True)
    client_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ConsoleSettingRow(Base):
    """Settings an admin edits in the console, one JSON document per section (`duo`,
    `two_factor`); secrets inside are sealed (security.sealing)."""

    __tablename__ = "console_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(150), default="")


class ApiTokenRow(Base):
    """A bearer token for /api/v1: shown once, stored as a SHA-256, revocable, expiring."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(150))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(150))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # What it may do (domain.api_scopes, space-separated), and the admin it answers to: the
    # token stops working when that account stops being an enabled admin, and goes with it.
    # None: made on the server's command line, by whoever runs the gateway.
    scopes: Mapped[str] = mapped_column(String(100))
    owner_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    # The token that made this one: revoking it revokes this one too, and this one never
    # outlives it.
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class AccessRuleRow(Base):
    """An access rule an admin manages in the console; evaluated after the settings file's
    rules, in `position` order. The lists hold what the rule matches (empty: anything)."""

    __tablename__ = "access_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    domains: Mapped[list[str]] = mapped_column(JSON)
    paths: Mapped[list[str]] = mapped_column(JSON, default=list)
    users: Mapped[list[str]] = mapped_column(JSON, default=list)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    networks: Mapped[list[str]] = mapped_column(JSON, default=list)
    policy: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(150), default="")


class AccessRulesVersionRow(Base):
    """One row whose `version` grows with every change to the console's access rules: nodes
    compare it (cheaply) to know when to reload them, and each change locks it first, so
    concurrent edits are applied one after the other."""

    __tablename__ = "access_rules_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApplicationRow(Base):
    """One application users sign in to through twofa (services.idp): an OpenID Connect
    client now, a SAML service provider later, with the same user/group limits and
    second-factor requirement. A confidential client's secret is kept only as a SHA-256 (it
    is a random 256-bit token, like an API token's)."""

    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(150), unique=True)
    protocol: Mapped[str] = mapped_column(String(16))  # "oidc"
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # no secret: PKCE S256 instead
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_users: Mapped[list[str]] = mapped_column(JSON, default=list)  # both empty: everyone
    allowed_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    second_factor_required: Mapped[bool] = mapped_column(Boolean, default=True)
    skip_consent: Mapped[bool] = mapped_column(Boolean, default=True)
    # Where the relying party hears, by a signed logout token, that a twofa session it was
    # signed in through has ended (OpenID Connect Back-Channel Logout); None: it is not told.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ChangeOutboxRow(Base):
    """A change other gateway processes must hear (`storage.change_notes.Changes`, as the
    feed encodes it), written in the transaction that made it. The Redis feed publishes after
    the commit; a node cut off from Redis would be heard by nobody, so every node also reads
    these rows four times a second (services.state.change_outbox). Kept for minutes, then
    pruned, the newest row never."""

    __tablename__ = "change_outbox"
    # Ids never reused: without AUTOINCREMENT SQLite takes max + 1, so an id could come back
    # once the rows above it were gone, and readers already past it would never read the row.
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    payload: Mapped[str] = mapped_column(Text)

"""Engines, sessions and schema migrations.

`upgrade` applies Alembic migrations; `check_schema` is called at start-up and refuses to run
on a database that is not migrated to exactly this version's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from twofa.errors import Unavailable


class SchemaError(Unavailable):
    """The database is not at the schema this twofa expects; the message says what to do."""


def migrations_dir() -> Path:
    return Path(str(resources.files("twofa.storage").joinpath("migrations")))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    """`pool_size`: connections kept open (not SQLite). Beyond them a request waits for a
    pooled connection; a few more may open (and close on return) only so that a request
    holding one while it needs another (a settings reload in a transaction) cannot wait on
    itself. Opening and closing a connection per request (SQLAlchemy's default of 5 kept
    and 10 more) cost more CPU than the requests under load."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No `pool_pre_ping` (three round trips per checkout with asyncpg, 12% of a TOTP
    # verification): a connection the server closed (restart, pg_terminate_backend) is known
    # to asyncpg as soon as the socket closes, and `_refuse_closed` makes the pool replace it.
    overflow = max(2, pool_size // 4) if pool_size > 1 else 0
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=overflow)
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(dbapi_connection: object, _record: object, _proxy: object) -> None:
    """SQLAlchemy's custom pessimistic check: a `DisconnectionError` here makes the pool
    discard this connection and check out another (it retries three times)."""
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver_connection, "is_closed", None)
    if callable(is_closed) and is_closed():
        raise DisconnectionError("the database closed this connection")


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Each factory's sessions get a class of their own, so the events one gateway listens
    to (storage.change_notes) never fire for another's in the same process (tests run
    several)."""
    own_class = type("GatewaySession", (Session,), {})
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=own_class)


def side_engine(engine: AsyncEngine) -> AsyncEngine:
    """One more connection to the same database, in a pool of its own, for a read that can
    happen while its caller holds a connection of the main pool (the settings copy reloads
    when a request inside a transaction asks for a setting): it can never wait for the pool
    its callers are holding, which under load is every connection."""
    return create_engine(engine.url.render_as_string(hide_password=False), pool_size=1)


def single_statement_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose statements each commit on their own (autocommit): a lone read costs one
    round trip instead of three (BEGIN, the read, COMMIT). Only for work that is one
    statement, or statements that need not agree with each other; anything else belongs in
    a transaction of `session_factory`."""
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(autocommit, expire_on_commit=False)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> str:
    """Migrates to `revision` (an earlier one: to test a migration's data step) and returns
    the revision now applied."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)
    return head_revision() if revision == "head" else revision


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.current is None:
            return f"database has no twofa schema yet (head {self.head}): run `twofa db upgrade`"
        if self.up_to_date:
            return f"database at revision {self.current} (head): up to date"
        return (
            f"database at revision {self.current}, this twofa expects {self.head}: "
            "run `twofa db upgrade` (or, if the database is newer, upgrade twofa)"
        )


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    """Where the schema stands, for `twofa db status` and `twofa doctor`."""
    return SchemaStatus(current=await current_revision(engine), head=head_revision())


async def check_schema(engine: AsyncEngine) -> None:
    current, head = await current_revision(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError("the database has no twofa schema yet: run `twofa db upgrade` first")
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current not in known:
        raise SchemaError(
            f"the database schema ({current}) is newer than this twofa knows ({head}); "
            "upgrade twofa or restore a matching backup"
        )
    raise SchemaError(f"the database schema ({current}) is behind ({head}): run `twofa db upgrade`")

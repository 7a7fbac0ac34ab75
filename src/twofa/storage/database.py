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

from twofa.errors import TwofaError


class SchemaError(TwofaError):
    """The database is not at the schema this twofa expects; the message says what to do."""


def migrations_dir() -> Path:
    return Path(str(resources.files("twofa.storage").joinpath("migrations")))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # No `pool_pre_ping` (three round trips per checkout with asyncpg, 12% of a TOTP
    # verification): a connection the server closed (restart, pg_terminate_backend) is known
    # to asyncpg as soon as the socket closes, and `_refuse_closed` makes the pool replace it.
    engine = create_async_engine(url)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
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

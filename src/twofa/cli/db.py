"""`twofa db`: brings the database schema to this version of twofa and reports where it
stands, so an admin can migrate before starting the gateway (which refuses a stale schema).
"""

from __future__ import annotations

import typer
from alembic.util import CommandError

from twofa.cli.common import run_with_gateway
from twofa.services.runtime import Gateway
from twofa.storage.database import SchemaError, SchemaStatus, schema_status, upgrade

db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)

EXIT_NOT_AT_HEAD = 1


async def _upgrade(gateway: Gateway) -> str:
    try:
        return await upgrade(gateway.engine)
    except CommandError as exc:  # e.g. a database migrated by a newer twofa
        raise SchemaError(f"cannot upgrade the database: {exc}") from None


async def _status(gateway: Gateway) -> SchemaStatus:
    return await schema_status(gateway.engine)


@db_app.command("upgrade")
def upgrade_command(ctx: typer.Context) -> None:
    """Apply every pending migration (safe to run again: an up-to-date database is kept)."""
    revision = run_with_gateway(ctx, _upgrade, verify_schema=False)
    typer.echo(f"database at revision {revision}")


@db_app.command("status")
def status_command(ctx: typer.Context) -> None:
    """Compare the database schema with this twofa's; exits 1 unless they match."""
    status = run_with_gateway(ctx, _status, verify_schema=False)
    typer.echo(status.describe())
    if not status.up_to_date:
        raise typer.Exit(EXIT_NOT_AT_HEAD)

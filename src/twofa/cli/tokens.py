"""`twofa token`: API tokens for /api/v1 from the command line: create one (its secret is
printed once, alone on stdout, so `TOKEN=$(twofa token create ci --scope read)` works), list
them without secrets, revoke one. Changes are audited with the actor `cli`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from twofa.cli.common import echo_json, render_table, run_with_gateway
from twofa.domain.api_scopes import ALL_SCOPES, UnknownScope, parse_scopes, scopes_text
from twofa.services.admin.api_tokens import (
    DEFAULT_DAYS,
    MAX_DAYS,
    ApiTokenInfo,
    ApiTokenService,
    IssuedToken,
)
from twofa.services.runtime import Gateway

token_app = typer.Typer(
    help="API tokens for /api/v1: create (shown once), list, revoke.", no_args_is_help=True
)
CLI_ACTOR = "cli"
TOKEN_COLUMNS = (
    "ID",
    "NAME",
    "STATUS",
    "SCOPES",
    "OWNER",
    "CREATED BY",
    "CREATED",
    "EXPIRES",
    "LAST USED",
)


def _service(gateway: Gateway) -> ApiTokenService:
    return gateway.api_tokens


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _status(info: ApiTokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    return "active" if info.active_at(now) else "expired"


@token_app.command("create")
def create_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for; audit shows token:NAME.")],
    days: Annotated[
        int, typer.Option(min=1, max=MAX_DAYS, help=f"Lifetime in days (at most {MAX_DAYS}).")
    ] = DEFAULT_DAYS,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help=f"What it may do, repeatable or comma-separated: {scopes_text(ALL_SCOPES)} "
            "(default: read).",
        ),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(help="The admin it answers to: it stops when they stop being an admin."),
    ] = None,
) -> None:
    """Create a token; it is printed now and can never be shown again."""
    try:
        scopes = parse_scopes(scope or ["read"])
    except UnknownScope as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc

    async def create(gateway: Gateway) -> IssuedToken:
        return await _service(gateway).create(
            name, created_by=CLI_ACTOR, scopes=scopes, days=days, owner=owner
        )

    issued = run_with_gateway(ctx, create)
    typer.echo(issued.token)
    typer.secho(
        f"created API token {issued.info.id} ({issued.info.name}) with the scopes "
        f"{scopes_text(issued.info.scopes)}, expires {_when(issued.info.expires_at)}.\n"
        "This is the only time the token is shown: store it now (it is kept only as a hash).",
        fg=typer.colors.YELLOW,
        err=True,
    )


@token_app.command("list")
def list_tokens(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every token with its status; secrets are never stored, so never shown."""

    async def tokens(gateway: Gateway) -> tuple[list[ApiTokenInfo], datetime]:
        return await _service(gateway).tokens(), gateway.clock.now()

    infos, now = run_with_gateway(ctx, tokens)
    if as_json:
        echo_json(
            [
                {
                    "id": info.id,
                    "name": info.name,
                    "status": _status(info, now),
                    "scopes": scopes_text(info.scopes).split(),
                    "owner": info.owner,
                    "created_by": info.created_by,
                    "created_at": info.created_at.isoformat(),
                    "expires_at": info.expires_at.isoformat(),
                    "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
                    "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
                }
                for info in infos
            ]
        )
    elif not infos:
        typer.echo("no API tokens yet: create one with `twofa token create NAME`")
    else:
        rows = [
            (
                info.id,
                info.name,
                _status(info, now),
                scopes_text(info.scopes),
                info.owner or "-",
                info.created_by,
                _when(info.created_at),
                _when(info.expires_at),
                _when(info.last_used_at),
            )
            for info in infos
        ]
        typer.echo(render_table(TOKEN_COLUMNS, rows))


@token_app.command("revoke")
def revoke_token(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The id from `twofa token list`.")],
) -> None:
    """Revoke a token: every request with it is refused from now on."""

    async def revoke(gateway: Gateway) -> ApiTokenInfo:
        return await _service(gateway).revoke(token_id, actor=CLI_ACTOR)

    info = run_with_gateway(ctx, revoke)
    typer.echo(f"revoked API token {info.id} ({info.name})")

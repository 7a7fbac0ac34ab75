"""`twofa settings authenticator-app`: the name authenticator apps show above a user's codes
(the console's Authenticator app page). `show` prints it, `set --issuer NAME` saves it for keys
set up from then on.
"""

from __future__ import annotations

from typing import Annotated

import typer

from twofa.cli.common import run_with_gateway
from twofa.cli.settings_cmd import CLI_ACTOR, run_edit
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway

authenticator_app = typer.Typer(
    help="Authenticator app: the name apps show above a user's codes.", no_args_is_help=True
)


@authenticator_app.command("show")
def show_authenticator_app(ctx: typer.Context) -> None:
    """The name keys set up now get."""

    async def read(gateway: Gateway) -> str:
        return await gateway.authenticator_app.issuer()

    typer.echo(f"issuer: {run_with_gateway(ctx, read)}")


@authenticator_app.command("set")
def set_authenticator_app(
    ctx: typer.Context,
    issuer: Annotated[
        str, typer.Option(help="The name, e.g. your company's (no colon, at most 40 characters).")
    ],
) -> None:
    """Save the name; keys already in an app keep the one they were added with."""

    async def save(gateway: Gateway) -> tuple[str, bool]:
        return await gateway.authenticator_app.set_issuer(issuer, CLI_ACTOR, CLI)

    name, changed = run_edit(ctx, save, {"issuer": "--issuer"})
    typer.echo(f"{'saved' if changed else 'unchanged'}: issuer {name}")

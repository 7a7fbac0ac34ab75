"""`twofa admin create`: the first administrator, before anyone can sign in to the console.
It is `twofa user add --admin` under the name the install guide uses."""

from __future__ import annotations

from typing import Annotated

import typer

from twofa.cli.common import (
    PasswordFileOption,
    PasswordStdinOption,
    read_new_password,
    run_with_gateway,
)
from twofa.services.runtime import Gateway

admin_app = typer.Typer(help="Console administrators.", no_args_is_help=True)


@admin_app.command("create")
def create_admin(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The administrator's username.")],
    display_name: Annotated[str, typer.Option(help="Full name (default: the username).")] = "",
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    password_file: PasswordFileOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Create a local user with the admin role; asks for the password unless told where."""
    password = read_new_password(password_file, password_stdin)

    async def add(gateway: Gateway) -> None:
        await gateway.accounts.add_user(
            username, password, display_name=display_name, email=email, is_admin=True
        )

    run_with_gateway(ctx, add)
    typer.echo(f"added administrator {username.strip()}; sign in at /login, console at /admin")

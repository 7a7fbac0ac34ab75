"""`twofa group`: groups of local users and their members. Groups are how 2FA is switched on
for many users at once (`twofa policy enable --group NAME`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from twofa.cli.common import echo_json, render_table, run_with_gateway, yes_no
from twofa.services.admin.accounts import GroupSummary
from twofa.services.runtime import Gateway

group_app = typer.Typer(help="Groups of users and their members.", no_args_is_help=True)

GroupArgument = Annotated[str, typer.Argument(help="The group's name.", show_default=False)]
UsernameArgument = Annotated[str, typer.Argument(help="The user's login name.", show_default=False)]


@group_app.command("add")
def add_group(ctx: typer.Context, name: GroupArgument) -> None:
    """Create an empty group (2FA off until `twofa policy enable --group NAME`)."""

    async def add(gateway: Gateway) -> None:
        await gateway.accounts.add_group(name)

    run_with_gateway(ctx, add)
    typer.echo(f"added group {name.strip()}")


@group_app.command("add-member")
def add_member(ctx: typer.Context, group: GroupArgument, username: UsernameArgument) -> None:
    """Put a user in a group."""
    if _set_membership(ctx, group, username, member=True):
        typer.echo(f"added {username} to {group}")
    else:
        typer.echo(f"{username} is already a member of {group}")


@group_app.command("remove-member")
def remove_member(ctx: typer.Context, group: GroupArgument, username: UsernameArgument) -> None:
    """Take a user out of a group."""
    if _set_membership(ctx, group, username, member=False):
        typer.echo(f"removed {username} from {group}")
    else:
        typer.echo(f"{username} was not a member of {group}")


def _set_membership(ctx: typer.Context, group: str, username: str, *, member: bool) -> bool:
    async def set_membership(gateway: Gateway) -> bool:
        return await gateway.accounts.set_membership(group, username, member)

    return run_with_gateway(ctx, set_membership)


@group_app.command("list")
def list_groups(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every group with whether 2FA is enabled for it and its members."""

    async def groups(gateway: Gateway) -> list[GroupSummary]:
        return await gateway.accounts.groups()

    summaries = run_with_gateway(ctx, groups)
    if as_json:
        echo_json([dataclasses.asdict(summary) for summary in summaries])
    elif not summaries:
        typer.echo("no groups yet: add one with `twofa group add NAME`")
    else:
        rows = [
            (group.name, yes_no(group.twofa_enabled), ", ".join(group.members) or "-")
            for group in summaries
        ]
        typer.echo(render_table(("GROUP", "2FA ENABLED", "MEMBERS"), rows))

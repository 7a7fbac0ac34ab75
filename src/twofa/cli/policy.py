"""`twofa policy`: who must pass a second factor. 2FA is switched on or off for one user or
for a whole group, and `show` explains the resulting decision for a user.
"""

from __future__ import annotations

from typing import Annotated

import typer

from twofa.cli.common import run_with_gateway
from twofa.domain.policy import PolicyDecision
from twofa.services.runtime import Gateway

policy_app = typer.Typer(help="Who must use a second factor.", no_args_is_help=True)

UserOption = Annotated[
    str | None, typer.Option("--user", help="One user, by login name.", show_default=False)
]
GroupOption = Annotated[
    str | None, typer.Option("--group", help="Every member of a group.", show_default=False)
]


@policy_app.command("enable")
def enable(ctx: typer.Context, user: UserOption = None, group: GroupOption = None) -> None:
    """Require 2FA for a user or for every member of a group."""
    _set_policy(ctx, user, group, enabled=True)


@policy_app.command("disable")
def disable(ctx: typer.Context, user: UserOption = None, group: GroupOption = None) -> None:
    """Stop requiring 2FA for a user or a group (members may still need it another way)."""
    _set_policy(ctx, user, group, enabled=False)


def _set_policy(ctx: typer.Context, user: str | None, group: str | None, *, enabled: bool) -> None:
    if (user is None) == (group is None):
        raise typer.BadParameter("give exactly one of them", param_hint="'--user' / '--group'")

    async def set_policy(gateway: Gateway) -> None:
        if user is not None:
            await gateway.accounts.set_user_policy(user, enabled)
        elif group is not None:
            await gateway.accounts.set_group_policy(group, enabled)

    run_with_gateway(ctx, set_policy)
    target = f"user {user}" if user is not None else f"group {group}"
    typer.echo(f"2FA {'enabled' if enabled else 'disabled'} for {target}")


@policy_app.command("show")
def show(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The user's login name.", show_default=False)],
) -> None:
    """Whether the user must pass a second factor, and why."""

    async def decision(gateway: Gateway) -> PolicyDecision:
        return (await gateway.accounts.user(username)).policy

    policy = run_with_gateway(ctx, decision)
    verdict = "2FA required" if policy.required else "2FA not required"
    typer.echo(f"{username}: {verdict}: {policy.reason}")

"""`twofa user`: local accounts from the command line: create (one by one or from a CSV file),
change password, disable and enable, inspect, reset a user's second factor, unlock and delete.
Every change goes through `AccountService`, so it is one transaction with its audit record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from twofa.cli.common import (
    PasswordFileOption,
    PasswordStdinOption,
    echo_json,
    read_new_password,
    render_table,
    run_with_gateway,
    yes_no,
)
from twofa.cli.user_csv import read_user_csv, rejected_rows
from twofa.domain.account_input import ImportRejected
from twofa.services.admin.accounts import UserSummary
from twofa.services.admin.user_import import ImportSummary
from twofa.services.runtime import Gateway

user_app = typer.Typer(
    help="Local users: accounts, passwords, second factor.", no_args_is_help=True
)

UsernameArgument = Annotated[str, typer.Argument(help="The user's login name.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@user_app.command("add")
def add_user(
    ctx: typer.Context,
    username: UsernameArgument,
    display_name: Annotated[str, typer.Option(help="Full name (default: the username).")] = "",
    email: Annotated[str, typer.Option(help="E-mail address.")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="May use the admin console.")] = False,
    password_file: PasswordFileOption = None,
    password_stdin: PasswordStdinOption = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Create without a password (set one later).")
    ] = False,
) -> None:
    """Create a local user; asks for the password unless told where to read it."""
    if no_password and (password_file is not None or password_stdin):
        raise typer.BadParameter(
            "no password and a password source at once", param_hint="'--no-password'"
        )
    password = None if no_password else read_new_password(password_file, password_stdin)

    async def add(gateway: Gateway) -> None:
        await gateway.accounts.add_user(
            username, password, display_name=display_name, email=email, is_admin=admin
        )

    run_with_gateway(ctx, add)
    typer.echo(f"added user {username.strip()}")


@user_app.command("passwd")
def change_password(
    ctx: typer.Context,
    username: UsernameArgument,
    password_file: PasswordFileOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Set a new password; the user's open sessions end."""
    password = read_new_password(password_file, password_stdin)

    async def set_password(gateway: Gateway) -> None:
        await gateway.accounts.set_password(username, password)

    run_with_gateway(ctx, set_password)
    typer.echo(f"password changed for {username}; their sessions were ended")


@user_app.command("disable")
def disable_user(ctx: typer.Context, username: UsernameArgument) -> None:
    """Refuse every sign-in for the user and end their sessions."""
    _set_enabled(ctx, username, enabled=False)
    typer.echo(f"disabled {username}")


@user_app.command("enable")
def enable_user(ctx: typer.Context, username: UsernameArgument) -> None:
    """Let a disabled user sign in again."""
    _set_enabled(ctx, username, enabled=True)
    typer.echo(f"enabled {username}")


@user_app.command("promote")
def promote_user(ctx: typer.Context, username: UsernameArgument) -> None:
    """Make the user an admin: the console opens to them after a second factor."""
    _set_admin(ctx, username, is_admin=True)
    typer.echo(f"{username} is an admin")


@user_app.command("demote")
def demote_user(ctx: typer.Context, username: UsernameArgument) -> None:
    """Take the admin role away: the console closes to them and their API tokens stop."""
    _set_admin(ctx, username, is_admin=False)
    typer.echo(f"{username} is no longer an admin")


def _set_admin(ctx: typer.Context, username: str, *, is_admin: bool) -> None:
    async def set_admin(gateway: Gateway) -> None:
        await gateway.accounts.set_admin(username, is_admin)

    run_with_gateway(ctx, set_admin)


def _set_enabled(ctx: typer.Context, username: str, *, enabled: bool) -> None:
    async def set_enabled(gateway: Gateway) -> None:
        await gateway.accounts.set_enabled(username, enabled)

    run_with_gateway(ctx, set_enabled)


@user_app.command("list")
def list_users(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every user with groups, whether 2FA is required (and why) and Duo Push status."""

    async def users(gateway: Gateway) -> list[UserSummary]:
        return await gateway.accounts.users()

    summaries = run_with_gateway(ctx, users)
    if as_json:
        echo_json([dataclasses.asdict(summary) for summary in summaries])
    elif not summaries:
        typer.echo("no users yet: add one with `twofa user add USERNAME`")
    else:
        typer.echo(render_table(USER_COLUMNS, [_user_row(summary) for summary in summaries]))


USER_COLUMNS = ("USERNAME", "NAME", "ENABLED", "ADMIN", "GROUPS", "2FA", "REASON", "METHODS")


def _user_row(summary: UserSummary) -> tuple[str, ...]:
    return (
        summary.username,
        summary.display_name,
        yes_no(summary.enabled),
        yes_no(summary.is_admin),
        ", ".join(summary.groups) or "-",
        "required" if summary.policy.required else "no",
        summary.policy.reason,
        ", ".join(summary.methods) or "not set up",
    )


@user_app.command("show")
def show_user(ctx: typer.Context, username: UsernameArgument, as_json: JsonOption = False) -> None:
    """One user in detail."""

    async def user(gateway: Gateway) -> UserSummary:
        return await gateway.accounts.user(username)

    summary = run_with_gateway(ctx, user)
    if as_json:
        echo_json(dataclasses.asdict(summary))
        return
    required = "required" if summary.policy.required else "not required"
    details = {
        "username": summary.username,
        "name": summary.display_name,
        "email": summary.email or "-",
        "enabled": yes_no(summary.enabled),
        "admin": yes_no(summary.is_admin),
        "groups": ", ".join(summary.groups) or "-",
        "2FA": f"{required} ({summary.policy.reason})",
        "methods": ", ".join(summary.methods) or "not set up",
    }
    width = max(map(len, details)) + 1
    for label, value in details.items():
        typer.echo(f"{label + ':':<{width}} {value}")


@user_app.command("reset-2fa")
def reset_second_factor(ctx: typer.Context, username: UsernameArgument) -> None:
    """Forget every second factor of the user (Duo Push, authenticator app, keys, codes …),
    their remembered devices and sessions: they enrol again at the next sign-in (for a lost
    or replaced phone)."""

    async def reset(gateway: Gateway) -> None:
        await gateway.accounts.reset_second_factor(username)

    run_with_gateway(ctx, reset)
    typer.echo(f"second factor reset for {username}; they will set it up at the next sign-in")


@user_app.command("forget-devices")
def forget_devices(ctx: typer.Context, username: UsernameArgument) -> None:
    """Make every browser where the user ticked "Remember this device" ask for a second
    factor again (a lost laptop, a shared computer)."""

    async def forget(gateway: Gateway) -> int:
        return await gateway.accounts.forget_devices(username)

    count = run_with_gateway(ctx, forget)
    typer.echo(f"{count} remembered device(s) of {username} forgotten")


@user_app.command("end-sessions")
def end_sessions(ctx: typer.Context, username: UsernameArgument) -> None:
    """Sign the user out of every browser, on every gateway node (a stolen laptop, a session
    cookie that leaked); their password and second factor stay as they are."""

    async def end(gateway: Gateway) -> None:
        await gateway.accounts.end_sessions(username)

    run_with_gateway(ctx, end)
    typer.echo(f"{username} is signed out everywhere")


@user_app.command("import")
def import_users(
    ctx: typer.Context,
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV with the header username,display_name,email,password,groups "
            "(groups separated by ';', password may be empty).",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ],
) -> None:
    """Create many users at once. The whole file is checked first: if any row is bad, every
    bad row is reported and nothing is written. Missing groups are created."""

    async def import_file(gateway: Gateway) -> ImportSummary:
        parsed = read_user_csv(csv_file)
        if parsed.malformed:
            problems = await gateway.accounts.check_import(parsed.users)
            raise rejected_rows(csv_file, [*parsed.malformed, *parsed.at_lines(problems)])
        try:
            return await gateway.accounts.import_users(parsed.users)
        except ImportRejected as exc:
            raise rejected_rows(csv_file, parsed.at_lines(exc.problems)) from None

    summary = run_with_gateway(ctx, import_file)
    typer.echo(
        f"imported {summary.users_created} users, created {len(summary.groups_created)} groups"
    )


@user_app.command("unlock")
def unlock_user(ctx: typer.Context, username: UsernameArgument) -> None:
    """Lift the user's sign-in and passcode lock-outs (after too many wrong attempts)."""

    async def unlock(gateway: Gateway) -> bool:
        return await gateway.accounts.unlock_user(username)

    if run_with_gateway(ctx, unlock):
        typer.echo(f"unlocked {username}")
    else:
        typer.echo(f"{username} was not locked; any failed attempts were forgotten")


@user_app.command("delete")
def delete_user(
    ctx: typer.Context,
    username: UsernameArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a local user with their sessions, Duo Push set-up and group memberships.
    This cannot be undone."""
    if not yes:
        typer.confirm(
            f"Delete user {username} with their sessions, 2FA set-up and memberships?",
            abort=True,
        )

    async def delete(gateway: Gateway) -> None:
        await gateway.accounts.delete_user(username)

    run_with_gateway(ctx, delete)
    typer.echo(f"deleted user {username}")

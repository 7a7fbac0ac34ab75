"""`twofa smtp`: the mail server e-mail codes go through (the console's E-mail Settings).
`set` saves it (options left out keep their values), `show` prints it with the password only as
set/not set, `test` sends a test message, `addresses` says or sets who chooses the address
codes go to. The password comes from a file or stdin, never an option, and is never printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Final

import typer

from twofa.cli.common import (
    EXIT_EXPECTED_ERROR,
    PasswordFileOption,
    echo_json,
    run_with_gateway,
)
from twofa.cli.settings_cmd import CLI_ACTOR, echo_fields, run_edit
from twofa.domain.client import CLI
from twofa.domain.smtp_settings import SmtpConfig, SmtpEdit, SmtpSecurity
from twofa.services.mail.delivery import SendTestOutcome
from twofa.services.runtime import Gateway

smtp_app = typer.Typer(
    help="The mail server for codes by e-mail: host, security, login, sender.",
    no_args_is_help=True,
)

SMTP_OPTIONS: Final = {
    "host": "--host",
    "port": "--port",
    "security": "--security",
    "username": "--username",
    "password": "--password-file / --password-stdin",
    "from_address": "--from",
    "timeout_s": "--timeout",
}


def read_password(password_file: Path | None, password_stdin: bool) -> str:
    """The new SMTP password, or "" to keep the stored one."""
    if password_file is not None and password_stdin:
        raise typer.BadParameter(
            "give one of them, not both", param_hint="'--password-file' / '--password-stdin'"
        )
    if password_file is not None:
        try:
            lines = password_file.read_text("utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            message = f"cannot read {password_file}: {exc}"
            raise typer.BadParameter(message, param_hint="--password-file") from None
        source, password = "--password-file", (lines[0] if lines else "")
    elif password_stdin:
        source, password = "--password-stdin", sys.stdin.readline().rstrip("\r\n")
    else:
        return ""
    if not password:
        raise typer.BadParameter("the password is empty", param_hint=source)
    return password


def describe(config: SmtpConfig | None) -> dict[str, str]:
    if config is None:
        return {"source": "not configured"}
    return {
        "host": config.host,
        "port": str(config.port),
        "security": config.security.value,
        "user name": config.username or "- (no login)",
        "password": "set" if config.has_password else "not set",
        "from": config.from_address,
        "timeout": f"{config.timeout_s} s",
    }


@smtp_app.command("set")
def set_smtp(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Mail server host name or IP.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (25, 465, 587 …).")] = None,
    security: Annotated[
        SmtpSecurity | None,
        typer.Option(help="none, starttls (usually 587) or tls (usually 465)."),
    ] = None,
    username: Annotated[
        str | None, typer.Option(help='Login user name; "" for no login.', show_default=False)
    ] = None,
    password_file: PasswordFileOption = None,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
    from_address: Annotated[
        str | None, typer.Option("--from", help="Sender address.", show_default=False)
    ] = None,
    timeout: Annotated[int | None, typer.Option(help="Seconds to wait for the server.")] = None,
) -> None:
    """Save the mail server; options left out keep their saved values."""
    password = read_password(password_file, password_stdin)

    async def save(gateway: Gateway) -> SmtpConfig:
        base = SmtpEdit.of(await gateway.smtp.get())
        edit = SmtpEdit(
            host=host if host is not None else base.host,
            port=str(port) if port is not None else base.port,
            security=security.value if security is not None else base.security,
            from_address=from_address if from_address is not None else base.from_address,
            username=username if username is not None else base.username,
            password=password,
            timeout_s=str(timeout) if timeout is not None else base.timeout_s,
        )
        return await gateway.smtp.save(edit, CLI_ACTOR, CLI)

    config = run_edit(ctx, save, SMTP_OPTIONS)
    typer.echo(f"saved: {config.host}:{config.port} ({config.security.value})")


@smtp_app.command("show")
def show_smtp(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The saved mail server; the password only as set/not set."""

    async def read(gateway: Gateway) -> SmtpConfig | None:
        return await gateway.smtp.get()

    fields = describe(run_with_gateway(ctx, read))
    if as_json:
        echo_json(fields)
    else:
        echo_fields(fields)


@smtp_app.command("test")
def test_smtp(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="The address to send the test message to.")],
) -> None:
    """Send a test message through the saved mail server."""

    async def send(gateway: Gateway) -> SendTestOutcome:
        return await gateway.smtp.send_test(to, CLI_ACTOR, CLI)

    outcome = run_with_gateway(ctx, send)
    if not outcome.sent:
        typer.secho(f"error: {outcome.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_EXPECTED_ERROR)
    typer.echo(outcome.message)


ADDRESS_SOURCES: Final = {True: "users choose at set-up", False: "the account's address"}


@smtp_app.command("addresses")
def address_choice(
    ctx: typer.Context,
    users_choose: Annotated[
        bool | None,
        typer.Option(
            "--users-choose/--account-only",
            help="Let users choose the address at set-up (confirmed by a code), or send "
            "codes only to the account's address. Left out: print the current choice.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Who chooses the address e-mail codes go to."""

    async def apply(gateway: Gateway) -> tuple[bool, bool]:
        options = gateway.email_codes
        if users_choose is None:
            return await options.users_choose_address(), False
        return users_choose, await options.set_users_choose_address(users_choose, CLI_ACTOR, CLI)

    on, changed = run_with_gateway(ctx, apply)
    if users_choose is None:
        typer.echo(f"addresses: {ADDRESS_SOURCES[on]}")
    else:
        typer.echo(f"{'saved' if changed else 'unchanged'}: {ADDRESS_SOURCES[on]}")

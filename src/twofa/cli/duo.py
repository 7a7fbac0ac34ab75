"""`twofa duo`: the Duo Auth API application the gateway uses (the console's Advanced
Settings). `set` proves the keys against Duo before saving them, `test` proves the saved ones,
`show` prints them. The secret key comes from a file or stdin, never an option, and is never
printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Final

import typer

from twofa.cli.common import EXIT_EXPECTED_ERROR, echo_json, run_with_gateway, yes_no
from twofa.cli.settings_cmd import CLI_ACTOR, echo_fields, run_edit
from twofa.config import DuoFactor, FailMode
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway
from twofa.services.settings.duo import ConnectionTest, DuoConsoleConfig, DuoEdit

duo_app = typer.Typer(
    help="The Duo Auth API application: keys, failmode, push options.", no_args_is_help=True
)

DUO_OPTIONS: Final = {
    "ikey": "--ikey",
    "skey": "--skey-file / --skey-stdin",
    "api_hostname": "--host",
    "failmode": "--failmode",
    "push_type": "--push-type",
    "application_name": "--application-name",
    "pushes_per_minute": "--pushes-per-minute",
    "pushes_per_day": "--pushes-per-day",
    "fraud_pause_minutes": "--fraud-pause-minutes",
    "allowed_factors": "--factors",
}
FIELD_NAMES: Final = {"ikey": "integration key", "skey": "secret key", "api_hostname": "API host"}


def parse_factors(text: str | None) -> tuple[DuoFactor, ...] | None:
    """`push,phone` as factors; None when the option was left out (keep the saved ones)."""
    if text is None:
        return None
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    try:
        return tuple(DuoFactor(name) for name in names)
    except ValueError:
        known = ", ".join(factor.value for factor in DuoFactor)
        message = f"use a comma-separated list of: {known}"
        raise typer.BadParameter(message, param_hint="--factors") from None


def read_skey(skey_file: Path | None, skey_stdin: bool) -> str:
    """The new secret key, or "" to keep the stored one. Never an option value: that would
    land in the shell history and the process list."""
    if skey_file is not None and skey_stdin:
        raise typer.BadParameter(
            "give one of them, not both", param_hint="'--skey-file' / '--skey-stdin'"
        )
    if skey_file is not None:
        try:
            lines = skey_file.read_text("utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            message = f"cannot read {skey_file}: {exc}"
            raise typer.BadParameter(message, param_hint="--skey-file") from None
        source, skey = "--skey-file", (lines[0].strip() if lines else "")
    elif skey_stdin:
        source, skey = "--skey-stdin", sys.stdin.readline().strip()
    else:
        return ""
    if not skey:
        raise typer.BadParameter("the secret key is empty", param_hint=source)
    return skey


@duo_app.command("set")
def set_duo(
    ctx: typer.Context,
    ikey: Annotated[
        str | None, typer.Option("--ikey", help="Integration key (DI…).", show_default=False)
    ] = None,
    skey_file: Annotated[
        Path | None,
        typer.Option(
            "--skey-file",
            help="Read the secret key from the first line of this file.",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ] = None,
    skey_stdin: Annotated[
        bool, typer.Option("--skey-stdin", help="Read the secret key from the first line of stdin.")
    ] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="API hostname, e.g. api-1234abcd.duosecurity.com."),
    ] = None,
    failmode: Annotated[
        FailMode | None,
        typer.Option(help="When Duo cannot be reached: secure denies, safe lets users in."),
    ] = None,
    push_type: Annotated[
        str | None, typer.Option(help="Push request type text.", show_default=False)
    ] = None,
    application_name: Annotated[
        str | None, typer.Option(help="Application name shown in the push.", show_default=False)
    ] = None,
    autopush: Annotated[
        bool | None,
        typer.Option("--autopush/--no-autopush", help="Send the push when the page opens."),
    ] = None,
    pushes_per_minute: Annotated[
        int | None,
        typer.Option(help="Pushes, calls and texts per minute per user.", show_default=False),
    ] = None,
    pushes_per_day: Annotated[
        int | None,
        typer.Option(
            help="Pushes, calls and texts per day per user (push fatigue).", show_default=False
        ),
    ] = None,
    fraud_pause_minutes: Annotated[
        int | None,
        typer.Option(
            help="Minutes no push, call or text goes to a user who reported one as fraud.",
            show_default=False,
        ),
    ] = None,
    factors: Annotated[
        str | None,
        typer.Option(
            "--factors",
            help="The Duo factors users may use, comma-separated: push, phone, sms, passcode "
            "(phone and sms cost Duo telephony credits).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Save the Duo settings once Duo accepts the keys; options left out keep their values."""
    skey = read_skey(skey_file, skey_stdin)
    allowed_factors = parse_factors(factors)

    async def save(gateway: Gateway) -> DuoConsoleConfig:
        base = await gateway.console.duo_edit_base()
        edit = DuoEdit(
            ikey=ikey if ikey is not None else base.ikey,
            api_hostname=host if host is not None else base.api_hostname,
            skey=skey,
            failmode=failmode or base.failmode,
            autopush=autopush if autopush is not None else base.autopush,
            push_type=push_type if push_type is not None else base.push_type,
            application_name=(
                application_name if application_name is not None else base.application_name
            ),
            pushes_per_minute=(
                pushes_per_minute if pushes_per_minute is not None else base.pushes_per_minute
            ),
            pushes_per_day=pushes_per_day if pushes_per_day is not None else base.pushes_per_day,
            fraud_pause_minutes=(
                fraud_pause_minutes if fraud_pause_minutes is not None else base.fraud_pause_minutes
            ),
            allowed_factors=allowed_factors
            if allowed_factors is not None
            else base.allowed_factors,
        )
        return await gateway.console.save_duo(edit, CLI_ACTOR, CLI)

    config = run_edit(ctx, save, DUO_OPTIONS)
    typer.echo(f"saved; Duo answered: keys are valid ({config.ikey} at {config.api_hostname})")


@duo_app.command("test")
def test_duo(ctx: typer.Context) -> None:
    """Prove the saved keys against Duo and print how far Duo's clock is from this one."""

    async def test(gateway: Gateway) -> ConnectionTest:
        return await gateway.console.test_connection()

    connection = run_with_gateway(ctx, test)
    if not connection.connected or connection.clock_skew_s is None:
        for name, why in connection.problems.items():
            field = FIELD_NAMES.get(name, name)
            typer.secho(f"error: {field}: {why}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_EXPECTED_ERROR)
    typer.echo(f"connected: Duo's clock differs by {abs(round(connection.clock_skew_s))} s")


@duo_app.command("show")
def show_duo(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The Duo settings in force and where they come from; the secret key only as set/not set."""

    async def read(gateway: Gateway) -> dict[str, str]:
        saved = await gateway.console.duo()
        file_duo = gateway.settings.duo
        base = await gateway.console.duo_edit_base()
        if saved is not None:
            source, has_secret = "console", saved.has_secret
        else:
            has_secret = bool(file_duo.skey.get_secret_value())
            source = "settings file" if file_duo.configured else "not configured"
        return {
            "source": source,
            "integration key": base.ikey or "-",
            "secret key": "set" if has_secret else "not set",
            "API hostname": base.api_hostname or "-",
            "failmode": base.failmode.value,
            "autopush": yes_no(base.autopush),
            "push type": base.push_type,
            "application name": base.application_name,
            "pushes per minute": str(base.pushes_per_minute),
            "pushes per day": str(base.pushes_per_day),
            "fraud pause": f"{base.fraud_pause_minutes} minutes",
            "allowed factors": ", ".join(factor.value for factor in base.allowed_factors),
        }

    fields = run_with_gateway(ctx, read)
    if as_json:
        echo_json(fields)
    else:
        echo_fields(fields)

"""What every admin command shares: choosing the settings file, running an action against a
started `Gateway`, turning twofa's expected errors into one red line and exit code 2, reading
new passwords without putting them on the command line, and printing tables.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, TypeVar

import typer

from twofa.config import Settings, load_settings
from twofa.errors import TwofaError
from twofa.services.runtime import Gateway

EXIT_EXPECTED_ERROR: Final = 2

T = TypeVar("T")

ConfigFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file (default: $TWOFA_CONFIG, else defaults and TWOFA_* variables).",
        dir_okay=False,
        show_default=False,
    ),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read the password from the first line of this file.",
        exists=True,
        dir_okay=False,
        readable=True,
        show_default=False,
    ),
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


@dataclass(frozen=True)
class GlobalOptions:
    """Options given before the command group (`twofa --config FILE user list`)."""

    config_file: Path | None = None


def remember_global_options(ctx: typer.Context, config_file: Path | None) -> None:
    ctx.obj = GlobalOptions(config_file=config_file)


def settings_for(ctx: typer.Context) -> Settings:
    """Settings are loaded only by commands that need them, so `twofa version` never fails."""
    options = ctx.find_object(GlobalOptions) or GlobalOptions()
    return load_settings(options.config_file)


@contextmanager
def expected_errors_reported() -> Iterator[None]:
    """The one place the CLI maps twofa's own errors (bad settings, unmigrated database,
    unknown user …) to a message an admin can act on; anything else is a bug and keeps its
    traceback."""
    try:
        yield
    except TwofaError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_EXPECTED_ERROR) from None


def run_with_gateway(
    ctx: typer.Context,
    action: Callable[[Gateway], Awaitable[T]],
    *,
    verify_schema: bool = True,
) -> T:
    """Loads the settings, starts a `Gateway`, runs `action` on it and always closes it."""
    with expected_errors_reported():
        settings = settings_for(ctx)
        return asyncio.run(_run_on_started_gateway(settings, action, verify_schema))


async def _run_on_started_gateway(
    settings: Settings, action: Callable[[Gateway], Awaitable[T]], verify_schema: bool
) -> T:
    gateway = await Gateway.start(settings, verify_schema=verify_schema)
    try:
        return await action(gateway)
    finally:
        await gateway.close()


def read_new_password(password_file: Path | None, password_stdin: bool) -> str:
    """From a file, from stdin, or from a hidden prompt asked twice; never from an option
    value, which would land in the shell history and the process list."""
    if password_file is not None and password_stdin:
        raise typer.BadParameter(
            "give one of them, not both", param_hint="'--password-file' / '--password-stdin'"
        )
    if password_file is not None:
        source = "--password-file"
        try:
            password = _first_line(password_file.read_text("utf-8"))
        except (OSError, UnicodeError) as exc:
            message = f"cannot read {password_file}: {exc}"
            raise typer.BadParameter(message, param_hint=source) from None
    elif password_stdin:
        password = _first_line(sys.stdin.readline())
        source = "--password-stdin"
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        source = "password"
    if not password:
        raise typer.BadParameter("the password is empty", param_hint=source)
    return password


def _first_line(text: str) -> str:
    lines = text.splitlines()
    return lines[0] if lines else ""


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain aligned columns: readable in a terminal, greppable in a script."""
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    divider = ["-" * width for width in widths]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, divider, *rows)
    )


def echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True))

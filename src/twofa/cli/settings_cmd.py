"""`twofa settings two-factor`: the console's Two Factor Settings from the command line (allowed
methods, backup method, enforcement, grace period, remembered devices), plus `run_edit`, which
every settings command uses to report a rejected edit field by field, by option name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Final, TypeVar

import typer

from twofa.cli.common import EXIT_EXPECTED_ERROR, echo_json, run_with_gateway
from twofa.domain.client import CLI
from twofa.services.runtime import Gateway
from twofa.services.settings.console import SettingsRejected
from twofa.services.settings.two_factor import BackupPolicy, Enforcement, TwoFactorConfig

CLI_ACTOR: Final = "cli"  # who the audit log names for changes made with the twofa command

T = TypeVar("T")

settings_app = typer.Typer(help="Settings an admin edits in the console.", no_args_is_help=True)
two_factor_app = typer.Typer(
    help="Two Factor Settings: methods, backup method, enforcement, grace period.",
    no_args_is_help=True,
)
settings_app.add_typer(two_factor_app, name="two-factor")

TWO_FACTOR_OPTIONS: Final = {
    "methods": "--method",
    "first_method": "--first-method",
    "backup": "--backup",
    "backup_methods": "--backup-method",
    "enforcement": "--enforcement",
    "grace_postponements": "--grace-postponements",
    "grace_days": "--grace-days",
    "remember_device_days": "--remember-device-days",
}


def run_edit(
    ctx: typer.Context,
    action: Callable[[Gateway], Awaitable[T]],
    option_names: Mapping[str, str],
) -> T:
    """Runs a settings edit; a rejection prints one red line per field, named by its option,
    and exits with status 2 (nothing was saved)."""

    async def guarded(gateway: Gateway) -> T | SettingsRejected:
        try:
            return await action(gateway)
        except SettingsRejected as rejected:
            return rejected

    outcome = run_with_gateway(ctx, guarded)
    if isinstance(outcome, SettingsRejected):
        for name, why in outcome.problems.items():
            option = option_names.get(name, name)
            typer.secho(f"error: {option}: {why}", fg=typer.colors.RED, err=True)
        typer.secho("nothing was saved", err=True)
        raise typer.Exit(EXIT_EXPECTED_ERROR)
    return outcome


def describe_two_factor(config: TwoFactorConfig) -> dict[str, str]:
    return {
        "methods": ", ".join(config.methods) or "-",
        "first method": config.first_method,
        "backup method": config.backup.value,
        "backup methods": ", ".join(config.backup_methods) or "-",
        "enforcement": config.enforcement.value,
        "grace postponements": str(config.grace_postponements),
        "grace days": str(config.grace_days),
        "remember device days": f"{config.remember_device_days}"
        + (" (off)" if config.remember_device_days == 0 else ""),
    }


def echo_fields(fields: Mapping[str, str]) -> None:
    width = max(len(name) for name in fields) + 1
    for name, value in fields.items():
        typer.echo(f"{name + ':':<{width}} {value}")


@two_factor_app.command("show")
def show_two_factor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The Two Factor Settings in force."""

    async def read(gateway: Gateway) -> TwoFactorConfig:
        return await gateway.console.two_factor()

    config = run_with_gateway(ctx, read)
    if as_json:
        echo_json(
            {
                **dataclasses.asdict(config),
                "backup": config.backup.value,
                "enforcement": config.enforcement.value,
            }
        )
    else:
        echo_fields(describe_two_factor(config))


MethodsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--method", help="A method users may use; repeat for several.", show_default=False
    ),
]
BackupMethodsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--backup-method", help="A backup method users set up; repeat for several.",
        show_default=False,
    ),
]  # fmt: skip


@two_factor_app.command("set")
def set_two_factor(
    ctx: typer.Context,
    methods: MethodsOption = None,
    first_method: Annotated[
        str | None, typer.Option(help="The method new users set up first.", show_default=False)
    ] = None,
    backup: Annotated[
        BackupPolicy | None,
        typer.Option(help="Backup method for emergency login.", show_default=False),
    ] = None,
    backup_methods: BackupMethodsOption = None,
    enforcement: Annotated[
        Enforcement | None,
        typer.Option(help="Who must use 2FA: everyone, or selected users and groups."),
    ] = None,
    grace_postponements: Annotated[
        int | None, typer.Option(help="Times a user may postpone enrolment.", show_default=False)
    ] = None,
    grace_days: Annotated[
        int | None, typer.Option(help="Days a user may postpone enrolment.", show_default=False)
    ] = None,
    remember_device_days: Annotated[
        int | None, typer.Option(help="Days a device is remembered (0 = off).", show_default=False)
    ] = None,
) -> None:
    """Change Two Factor Settings; options left out keep their current values."""

    async def save(gateway: Gateway) -> TwoFactorConfig:
        current = await gateway.console.two_factor()
        edited = TwoFactorConfig(
            methods=tuple(methods) if methods is not None else current.methods,
            first_method=first_method if first_method is not None else current.first_method,
            backup=backup if backup is not None else current.backup,
            backup_methods=(
                tuple(backup_methods) if backup_methods is not None else current.backup_methods
            ),
            enforcement=enforcement if enforcement is not None else current.enforcement,
            grace_postponements=_or(grace_postponements, current.grace_postponements),
            grace_days=_or(grace_days, current.grace_days),
            remember_device_days=_or(remember_device_days, current.remember_device_days),
        )
        return await gateway.console.save_two_factor(edited, CLI_ACTOR, CLI)

    config = run_edit(ctx, save, TWO_FACTOR_OPTIONS)
    typer.echo("saved Two Factor Settings:")
    echo_fields(describe_two_factor(config))


def _or(given: int | None, current: int) -> int:
    return current if given is None else given

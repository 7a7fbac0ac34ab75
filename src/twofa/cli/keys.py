"""`twofa keys`: retiring a secret key. `status` counts the sealed values each key holds (so an
admin knows when an older key is unused); `rotate` seals every value again with the newest key,
in batches each committed on its own, safe to run while gateways serve and to run again after
an interruption. The keys are `secret_key`, one a line, newest first.
"""

from __future__ import annotations

from typing import Annotated, Final

import typer

from twofa.cli.common import echo_json, render_table, run_with_gateway
from twofa.cli.settings_cmd import CLI_ACTOR
from twofa.domain.client import CLI
from twofa.services.admin.key_rotation import (
    DEFAULT_BATCH_SIZE,
    UNRECOGNISED_LABEL,
    V1_LABEL,
    KeyUsage,
    RotationProgress,
    RotationResult,
)
from twofa.services.runtime import Gateway

keys_app = typer.Typer(
    help="Secret keys: which sealed values each key holds; seal them all with the newest.",
    no_args_is_help=True,
)
EXIT_NOT_FINISHED: Final = 1
USAGE_COLUMNS: Final = ("KEY", "IN SECRET_KEY", "VALUES", "WHERE")


def _values(count: int) -> str:
    return f"{count} value{'s' if count != 1 else ''}"


def _role(usage: KeyUsage, label: str) -> str:
    if label in usage.key_ids:
        return "newest" if label == usage.key_ids[0] else "older"
    # v1 values name no key: whichever listed key sealed them opens them.
    return "unknown" if label in (V1_LABEL, UNRECOGNISED_LABEL) else "MISSING"


def _usage_rows(usage: KeyUsage) -> list[tuple[str, str, str, str]]:
    labels = [*usage.key_ids, *(label for label in usage.counts if label not in usage.key_ids)]
    return [
        (
            label,
            _role(usage, label),
            str(usage.total(label)),
            ", ".join(f"{n} {place}" for place, n in usage.counts.get(label, {}).items() if n),
        )
        for label in labels
    ]


def _verdict(usage: KeyUsage) -> str:
    if usage.unopenable:
        return (
            "Some values are sealed by a key that is not in secret_key and cannot be opened: "
            "put that key back (after the newest) and run `twofa keys rotate`."
        )
    if usage.stale:
        return (
            f"{_values(usage.stale)} still need an older key ({usage.describe_stale()}): "
            "run `twofa keys rotate`; keep the older keys until it finishes."
        )
    if len(usage.key_ids) > 1:
        return (
            "Every sealed value uses the newest key: remove the older keys from secret_key, "
            "then restart the gateways."
        )
    return "Every sealed value uses the newest key."


@keys_app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Count the sealed values of each key (nothing is opened or changed)."""

    async def usage_of(gateway: Gateway) -> KeyUsage:
        return await gateway.key_rotation.usage()

    usage = run_with_gateway(ctx, usage_of)
    if as_json:
        echo_json(
            {
                "keys": list(usage.key_ids),
                "counts": {label: dict(places) for label, places in usage.counts.items()},
                "current": usage.current,
                "stale": usage.stale,
                "older_keys_unused": usage.older_keys_unused,
            }
        )
        return
    typer.echo(render_table(USAGE_COLUMNS, _usage_rows(usage)))
    typer.echo(f"\n{_verdict(usage)}")


def _print_progress(progress: RotationProgress) -> None:
    typer.echo(
        f"{progress.place}: batch {progress.batches} done, {_values(progress.resealed)} sealed "
        f"again so far ({progress.changed_meanwhile} changed meanwhile, "
        f"{progress.unreadable} unreadable)"
    )


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Rows sealed again per transaction.")
    ] = DEFAULT_BATCH_SIZE,
) -> None:
    """Seal every value again with the newest key (the first line of secret_key). Safe while
    gateways run; if interrupted, run it again. Exits 1 while values still need an older key."""

    async def run(gateway: Gateway) -> RotationResult:
        typer.echo(f"sealing with the newest key {gateway.key_rotation.key_ids[0]}")
        return await gateway.key_rotation.rotate(
            actor=CLI_ACTOR, client=CLI, batch_size=batch_size, progress=_print_progress
        )

    result = run_with_gateway(ctx, run)
    changed = result.changed_meanwhile
    typer.echo(
        f"\n{_values(result.resealed)} sealed again"
        + (f"; {changed} changed meanwhile, left as a gateway wrote them" if changed else "")
    )
    for where in result.unreadable:
        typer.secho(f"cannot open {where}", fg=typer.colors.RED, err=True)
    typer.echo(_verdict(result.after))
    if not result.finished:
        raise typer.Exit(EXIT_NOT_FINISHED)

"""`twofa audit`: read the audit log from the command line: list recent events with the same
filters as the console's Audit Log, or export a time range as CSV for a spreadsheet or an
archive. Secrets never appear: the services redact them before anything is printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from twofa.cli.common import echo_json, render_table, run_with_gateway
from twofa.domain.client import CLI
from twofa.services.admin.audit_query import (
    MAX_PAGE_SIZE,
    AuditCriteria,
    AuditEntry,
    AuditFilterRejected,
    csv_text,
    parse_criteria,
)
from twofa.services.runtime import Gateway

audit_app = typer.Typer(help="The audit log: list and export events.", no_args_is_help=True)

UserOption = Annotated[str, typer.Option("--user", help="Only this user's events.")]
KindOption = Annotated[str, typer.Option("--kind", help="Only this event kind (e.g. login).")]
OutcomeOption = Annotated[
    str, typer.Option("--outcome", help="Only this outcome (e.g. bad_password).")
]
SinceHelp = "From this time on: 2026-11-28, 2026-11-28T14:05 or full ISO (UTC if no zone)."
UntilHelp = "Before this time; a bare date includes that whole day."
UntilOption = Annotated[str, typer.Option("--until", help=UntilHelp, show_default=False)]
DETAIL_WIDTH = 60


def criteria_from_options(
    user: str, kind: str, outcome: str, since: str, until: str
) -> AuditCriteria:
    try:
        return parse_criteria(username=user, kind=kind, outcome=outcome, since=since, until=until)
    except AuditFilterRejected as exc:
        name, why = next(iter(exc.problems.items()))
        raise typer.BadParameter(why, param_hint=f"'--{name}'") from None


@audit_app.command("list")
def list_events(
    ctx: typer.Context,
    user: UserOption = "",
    kind: KindOption = "",
    outcome: OutcomeOption = "",
    since: Annotated[str, typer.Option("--since", help=SinceHelp, show_default=False)] = "",
    until: UntilOption = "",
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_PAGE_SIZE, help="How many events.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The newest events first, filtered by user, kind, outcome and time."""
    criteria = criteria_from_options(user, kind, outcome, since, until)

    async def newest(gateway: Gateway) -> tuple[tuple[AuditEntry, ...], int]:
        page = await gateway.audit_queries.page(criteria, limit=limit)
        return page.entries, page.total

    entries, total = run_with_gateway(ctx, newest)
    if as_json:
        echo_json([entry.as_json() for entry in entries])
        return
    if not entries:
        typer.echo("no events match")
        return
    typer.echo(render_table(EVENT_COLUMNS, [_event_row(entry) for entry in entries]))
    if total > len(entries):
        typer.echo(f"(the newest {len(entries)} of {total}; use --limit or narrow the filter)")


EVENT_COLUMNS = ("AT (UTC)", "KIND", "OUTCOME", "USER", "CLIENT IP", "DETAIL")


def _event_row(entry: AuditEntry) -> tuple[str, ...]:
    detail = entry.detail_json if entry.detail else ""
    if len(detail) > DETAIL_WIDTH:
        detail = detail[: DETAIL_WIDTH - 1] + "…"
    return (
        entry.at.strftime("%Y-%m-%d %H:%M:%S"),
        entry.kind,
        entry.outcome,
        entry.username or "-",
        entry.client_ip or "-",
        detail.replace("\n", " "),
    )


@audit_app.command("export")
def export_events(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help=SinceHelp, show_default=False)],
    until: UntilOption = "",
    user: UserOption = "",
    kind: KindOption = "",
    outcome: OutcomeOption = "",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the CSV to this file (default: standard output).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Every matching event, oldest first, as CSV (columns at, kind, outcome, username,
    client_ip, user_agent, detail as JSON). The export is itself audited."""
    criteria = criteria_from_options(user, kind, outcome, since, until)
    try:
        target = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as exc:
        raise typer.BadParameter(f"cannot write: {exc.strerror}", param_hint="'--output'") from None

    async def export(gateway: Gateway) -> int:
        queries = gateway.audit_queries
        await queries.record_export(criteria, "cli", CLI)
        target.write(csv_text(()))
        written = 0
        async for entry in queries.entries_in_time_order(criteria):
            target.write(csv_text((entry,), header=False))
            written += 1
        return written

    try:
        written = run_with_gateway(ctx, export)
    except BaseException:
        if output:  # half an export must not pass for a whole one
            target.close()
            output.unlink(missing_ok=True)
        raise
    if output:
        target.close()
        typer.echo(f"exported {written} events to {output}", err=True)

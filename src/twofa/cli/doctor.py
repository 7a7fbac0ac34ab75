"""`twofa doctor`: one line per part the gateway leans on (database, Duo, mail server,
Redis, directories), saying whether it answers and, when not, why; exits 1 if any failed.
"""

from __future__ import annotations

import typer

from twofa.cli.common import run_with_gateway
from twofa.services.doctor import Finding, State, examine, failed_parts

EXIT_SOMETHING_FAILED = 1
MARKS = {
    State.OK: "ok    ",
    State.FAILED: "FAILED",
    State.NOT_SET_UP: "-     ",
    State.NOT_CHECKED: "?     ",
    State.WARNING: "warn  ",
}


def doctor(ctx: typer.Context) -> None:
    """Check that the database, Duo, the mail server, Redis and each directory answer
    (nothing is changed or sent); exits 1 if any check failed."""
    findings: list[Finding] = run_with_gateway(ctx, examine, verify_schema=False)
    width = max(len(finding.part) for finding in findings)
    for finding in findings:
        typer.echo(f"{MARKS[finding.state]}  {finding.part:<{width}}  {finding.detail}")
    failed = failed_parts(findings)
    if failed:
        typer.echo(f"\n{len(failed)} of {len(findings)} checks failed: {', '.join(failed)}")
        raise typer.Exit(EXIT_SOMETHING_FAILED)
    typer.echo(f"\nno check failed ({len(findings)} parts)")

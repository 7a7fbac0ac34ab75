"""The `twofa` command: one entry point for every admin action.

Sub-commands live in their own modules and are mounted here.
"""

from __future__ import annotations

import typer

from twofa import __version__
from twofa.cli.serve import demo, serve
from twofa.cli.simulator import simulator_app

app = typer.Typer(
    name="twofa",
    help="twofa: a self-hosted two-factor authentication gateway with Duo Push.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(simulator_app, name="simulator")
app.command()(serve)
app.command()(demo)


@app.command()
def version() -> None:
    """Print the twofa version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()

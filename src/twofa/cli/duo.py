"""`twofa duo`: (to be filled in)."""

from __future__ import annotations

import typer

duo_app = typer.Typer(help="(to be filled in)", no_args_is_help=True)

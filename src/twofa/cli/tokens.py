"""`twofa token`: (to be filled in)."""

from __future__ import annotations

import typer

token_app = typer.Typer(help="(to be filled in)", no_args_is_help=True)

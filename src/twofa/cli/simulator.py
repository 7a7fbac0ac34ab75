"""`twofa simulator serve`: runs the bundled Duo Auth API simulator on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from twofa.cli.runtime import tune_garbage_collector
from twofa.simulator import SimulatorSettings, create_simulator_app

simulator_app = typer.Typer(help="The bundled Duo Auth API simulator.", no_args_is_help=True)

DEMO_IKEY = "DISIMULATORDEMO00001"
DEMO_SKEY = "simulator-demo-secret-key-not-for-prod00"


def read_secret(value: str | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text("utf-8").strip()
    return value


@simulator_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    ikey: Annotated[str, typer.Option(help="Integration key clients sign with.")] = DEMO_IKEY,
    skey: Annotated[
        str | None, typer.Option(help="Secret key (prefer --skey-file).", show_default=False)
    ] = None,
    skey_file: Annotated[
        Path | None, typer.Option(help="File holding the secret key.", exists=True)
    ] = None,
    api_hostname: Annotated[
        str | None,
        typer.Option(help="Host name clients sign (default: whatever Host they send)."),
    ] = None,
    push_timeout: Annotated[float, typer.Option(help="Seconds before a push times out.")] = 60.0,
    long_poll_hold: Annotated[
        float, typer.Option(help="Seconds auth_status holds a request without news.")
    ] = 20.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the simulator. Open /_sim/phone in a browser to approve pushes."""
    secret = read_secret(skey, skey_file) or DEMO_SKEY
    if secret == DEMO_SKEY:
        typer.secho(f"using the demo keys: ikey {ikey}, skey {DEMO_SKEY}", fg="yellow", err=True)
    settings = SimulatorSettings(
        ikey=ikey,
        skey=secret,
        api_hostname=api_hostname,
        push_timeout_s=push_timeout,
        long_poll_hold_s=long_poll_hold,
    )
    tune_garbage_collector()
    typer.echo(f"Duo simulator on http://{host}:{port}  (phone: http://{host}:{port}/_sim/phone)")
    uvicorn.run(
        create_simulator_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        timeout_keep_alive=75,
    )

"""`twofa serve` runs the gateway; `twofa demo` runs the whole product on one machine with no
Duo account: the gateway, the bundled Duo simulator, a SQLite database and demo users."""

from __future__ import annotations

import asyncio
import contextlib
import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from twofa.cli.common import GlobalOptions, expected_errors_reported, settings_for
from twofa.cli.logging_setup import configure_logging, uvicorn_log_config
from twofa.cli.runtime import freeze_what_start_up_built, run_server, tune_garbage_collector
from twofa.cli.workers import run_workers
from twofa.config import Mode, Settings, load_settings
from twofa.domain.account_input import AccountError
from twofa.errors import ConfigurationError
from twofa.services.runtime import Gateway
from twofa.simulator import SimulatorSettings, create_simulator_app
from twofa.storage.database import create_engine, upgrade
from twofa.telemetry import shared_metrics_directory, worker_exited
from twofa.web.app import create_app
from twofa.web.reverse_proxy import ReverseProxy

DEMO_SECRET = "twofa-demo-mode-secret-key-not-for-production"  # noqa: S105 (demo mode only)
DEMO_IKEY = "DIDEMOINTEGRATION001"
DEMO_SKEY = "demo-duo-secret-key-demo-duo-secret-key0"
DEMO_USERS = (
    ("alice", "Alice Liddell", "alice@example.com", "demo-alice", False),
    ("bob", "Bob Builder", "bob@example.com", "demo-bob", False),
    ("admin", "Demo Admin", "admin@example.com", "demo-admin", True),
)


# How `twofa serve --workers` tells its workers; not TWOFA_*, which the settings would refuse.
UPSTREAM_ENV = "_TWOFA_SERVE_UPSTREAM"


def _uvicorn_options(
    host: str, port: int, access_log: bool, log_format: Literal["text", "json"] = "text"
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_config": uvicorn_log_config(log_format),
        "log_level": "info",
        "proxy_headers": False,  # twofa decides itself which proxies it believes
        "timeout_keep_alive": 75,
        "access_log": access_log,
        "server_header": False,  # no "server: uvicorn": nothing to tell a scanner
    }


def _uvicorn_config(
    app: ASGIApp,
    host: str,
    port: int,
    access_log: bool = True,
    log_format: Literal["text", "json"] = "text",
) -> uvicorn.Config:
    return uvicorn.Config(app, **_uvicorn_options(host, port, access_log, log_format))


def _served(app: FastAPI, upstream: str | None) -> ASGIApp:
    return ReverseProxy(app, upstream) if upstream else app


def worker_app() -> ASGIApp:
    """What each worker process of `twofa serve --workers N` serves (a uvicorn factory): the
    settings from TWOFA_CONFIG and the TWOFA_* variables the parent checked and passed on."""
    settings = load_settings()
    configure_logging(settings.log_format)
    tune_garbage_collector()
    return _served(
        create_app(settings, after_start=freeze_what_start_up_built),
        os.environ.get(UPSTREAM_ENV) or None,
    )


async def _check_gateway(settings: Settings) -> None:
    gateway = await Gateway.start(settings)  # fail fast, with a clear message, before binding
    await gateway.close()


def _serve_workers(
    settings: Settings,
    config_file: Path | None,
    host: str,
    port: int,
    access_log: bool,
    upstream: str | None,
    workers: int,
) -> None:
    """Several processes on one port, each with a listening socket of its own (a worker that
    dies is restarted). Every cache a worker keeps is rechecked within a second, so they behave
    as one. With metrics on, the workers count into files in a private directory made for
    this run (twofa.telemetry), so a scrape of any of them sums them all."""
    if config_file is not None:
        os.environ["TWOFA_CONFIG"] = str(config_file.resolve())
    os.environ[UPSTREAM_ENV] = upstream or ""
    config = uvicorn.Config(
        "twofa.cli.serve:worker_app",
        factory=True,
        workers=workers,
        loop="uvloop",
        http="httptools",
        **_uvicorn_options(host, port, access_log, settings.log_format),
    )
    if not settings.metrics.enabled:  # no files to write at every count
        run_workers(config, workers)
        return
    with shared_metrics_directory() as metrics_directory:  # before any worker starts
        run_workers(config, workers, on_worker_exit=partial(worker_exited, path=metrics_directory))


async def _serve_gateway(
    settings: Settings, host: str, port: int, access_log: bool, upstream: str | None
) -> None:
    await _check_gateway(settings)
    tune_garbage_collector()
    served = _served(create_app(settings, after_start=freeze_what_start_up_built), upstream)
    config = _uvicorn_config(served, host, port, access_log, settings.log_format)
    await uvicorn.Server(config).serve()


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    access_log: Annotated[
        bool,
        typer.Option(
            help="Log every request. Behind a reverse proxy that logs them already, "
            "--no-access-log saves a log line per forward-auth check."
        ),
    ] = True,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Built-in reverse proxy: pass requests for the protected domains "
            "([access] domains) to this application URL after the access check."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes on one port; one per CPU core uses the machine. All "
            "share the database, so they behave as one gateway.",
        ),
    ] = 1,
) -> None:
    """Run the twofa gateway (settings from `twofa --config FILE`, TWOFA_CONFIG or TWOFA_*)."""
    configure_logging()  # text until the settings say otherwise
    with expected_errors_reported():
        settings = settings_for(ctx)
        configure_logging(settings.log_format)
        if upstream and not settings.access.domains:
            raise ConfigurationError(
                "--upstream needs the protected domains in the settings: [access] domains"
            )
        if workers == 1:
            run_server(_serve_gateway(settings, host, port, access_log, upstream))
            return
        run_server(_check_gateway(settings))
        options = ctx.find_object(GlobalOptions) or GlobalOptions()
        _serve_workers(settings, options.config_file, host, port, access_log, upstream, workers)


async def seed_demo(gateway: Gateway) -> None:
    accounts = gateway.accounts
    for username, name, email, password, is_admin in DEMO_USERS:
        with contextlib.suppress(AccountError):  # already seeded by an earlier run
            await accounts.add_demo_user(
                username, password, display_name=name, email=email, is_admin=is_admin
            )
    with contextlib.suppress(AccountError):
        await accounts.add_group("engineering")
    await accounts.set_membership("engineering", "alice", True)
    await accounts.set_group_policy("engineering", True)


async def _run_demo(port: int, database: Path) -> None:
    sim_port = port + 1
    simulator = create_simulator_app(SimulatorSettings(ikey=DEMO_IKEY, skey=DEMO_SKEY))
    settings = load_settings(
        environ={},
        mode=Mode.DEMO.value,
        secret_key=DEMO_SECRET,
        database_url=f"sqlite+aiosqlite:///{database}",
        public_url=f"http://127.0.0.1:{port}",
        # The demo's admin goes straight to the console; everywhere else an admin passes a
        # second factor first (the setting is refused outside demo mode).
        admins_without_second_factor=True,
        duo={
            "ikey": DEMO_IKEY,
            "skey": DEMO_SKEY,
            "api_hostname": f"http://127.0.0.1:{sim_port}",
            "application_name": "twofa demo",
        },
    )
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    gateway = await Gateway.start(settings)
    try:
        await seed_demo(gateway)
    finally:
        await gateway.close()
    tune_garbage_collector()
    servers = [
        uvicorn.Server(
            _uvicorn_config(
                create_app(settings, after_start=freeze_what_start_up_built), "127.0.0.1", port
            )
        ),
        uvicorn.Server(_uvicorn_config(simulator, "127.0.0.1", sim_port)),
    ]
    print(
        f"\n  twofa demo (demo mode, 127.0.0.1 only)\n"
        f"  sign in:       http://127.0.0.1:{port}/login\n"
        f"                 alice / demo-alice (2FA via group engineering)\n"
        f"                 bob / demo-bob (no 2FA)\n"
        f"  phone page:    http://127.0.0.1:{sim_port}/_sim/phone  (the simulated Duo Mobile)\n"
        f"  Duo simulator: http://127.0.0.1:{sim_port}/auth/v2/…  control plane: /_sim/\n"
        f"  demo app:      http://127.0.0.1:{port}/app\n",
        flush=True,
    )
    await asyncio.gather(*(server.serve() for server in servers))


def demo(
    port: Annotated[
        int, typer.Option(help="Gateway port; the simulator takes the next one.")
    ] = 8000,
    database: Annotated[Path, typer.Option(help="SQLite file for the demo.")] = Path("var/demo.db"),
) -> None:
    """Run twofa with the bundled Duo simulator and demo users (alice, bob, admin)."""
    configure_logging()
    with expected_errors_reported():
        run_server(_run_demo(port, database.resolve()))

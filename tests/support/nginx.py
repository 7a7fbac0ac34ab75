"""Runs Debian's nginx with the shipped `deploy/nginx/twofa.conf`, its upstreams and names
pointed at the test's servers, on a loopback port, in a throwaway prefix directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.databases import require_or_skip

DEPLOY_CONF = Path(__file__).parents[2] / "deploy" / "nginx" / "twofa.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN_CONF = """
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/twofa.conf;
}}
"""


@dataclass(frozen=True)
class RunningNginx:
    port: int
    auth_host: str
    app_host: str


def adapted_deploy_conf(
    port: int, twofa: str | Sequence[str], app: str, auth_host: str, app_host: str
) -> str:
    """The deploy file with only its addresses changed: what the tests run is what ships.
    Several `twofa` addresses: one gateway node each, in the one upstream (round-robin)."""
    text = DEPLOY_CONF.read_text()
    nodes = [twofa] if isinstance(twofa, str) else list(twofa)
    replacements = {
        "server 127.0.0.1:9091;": "\n    ".join(f"server {node};" for node in nodes),
        "server 127.0.0.1:8080;": f"server {app};",
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server_name auth.example.com;": f"server_name {auth_host};",
        "server_name app.example.com;": f"server_name {app_host};",
        "http://auth.example.com/login": f"http://{auth_host}:{port}/login",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx/twofa.conf no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start listening")


@contextmanager
def running_nginx(
    prefix: Path, port: int, twofa: str | Sequence[str], app: str, auth_host: str, app_host: str
) -> Iterator[RunningNginx]:
    if not Path(NGINX).exists():
        require_or_skip("nginx is not installed (Debian package nginx-light or nginx)")
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "twofa.conf").write_text(adapted_deploy_conf(port, twofa, app, auth_host, app_host))
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=prefix))
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, prefix / "error.log")
        yield RunningNginx(port, auth_host, app_host)
    finally:
        process.terminate()
        process.wait(timeout=10)

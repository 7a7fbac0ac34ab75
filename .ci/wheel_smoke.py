"""Builds twofa's wheel, installs it with the pinned set in a fresh virtual environment outside the
checkout, and runs `twofa demo` from there: proves the wheel carries every file the product reads
at run time (templates, static files, migrations, data) and starts without the source tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "twofa"
CONSTRAINTS = ROOT / "constraints.txt"
START_SECONDS = 60  # migrating a fresh SQLite file and seeding the demo users takes a few
# The loopback pages must never go through a proxy the environment may name.
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SmokeFailed(Exception):
    pass


def run(
    command: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SmokeFailed(f"{' '.join(map(str, command))} failed:\n{done.stdout}{done.stderr}")
    output: str = done.stdout + done.stderr
    return output


def build_wheel(scratch: Path) -> Path:
    # A copy keeps build/ and *.egg-info out of the checkout. PIP_CONSTRAINT, unlike -c, reaches
    # pip's isolated build environment, so the build backend is the pinned setuptools.
    source = scratch / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICEN[CS]E*")]:
        shutil.copy2(path, source)
    environment = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    command = [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "-w"]
    output = run([*command, scratch / "dist", source], env=environment)
    deprecated = [line.strip() for line in output.splitlines() if "deprecat" in line.lower()]
    if deprecated:  # setuptools names a date after which such a build stops working
        raise SmokeFailed("building the wheel warns of deprecations:\n" + "\n".join(deprecated))
    return next((scratch / "dist").glob("twofa-*.whl"))


def check_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        headers = archive.read(metadata).decode()
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing = sorted(
        name for p in files if (name := f"twofa/{p.relative_to(PACKAGE).as_posix()}") not in names
    )
    if missing:  # most likely a package-data glob in pyproject.toml that does not match it
        raise SmokeFailed(f"the wheel lacks {len(missing)} files of src/twofa: {missing}")
    if "\nLicense-Expression: " not in headers:
        raise SmokeFailed("the wheel's METADATA has no License-Expression (SPDX)")
    print(f"wheel-smoke: {wheel.name} holds all {len(files)} files of src/twofa")


def install(wheel: Path, scratch: Path) -> Path:
    venv = scratch / "venv"
    run([sys.executable, "-m", "venv", venv])
    pip: list[str | Path] = [
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
    ]
    run([*pip, "-c", CONSTRAINTS, wheel], cwd=scratch)
    return venv / "bin" / "twofa"


def free_port_pair() -> int:
    """A loopback port whose next one is free too: the demo's simulator takes that one."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise SmokeFailed("found no two free neighbouring loopback ports")


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with LOOPBACK.open(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until_healthy(demo: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise SmokeFailed(f"twofa demo exited with {demo.returncode} before answering")
        try:
            if fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    raise SmokeFailed(f"/healthz did not answer 200 within {START_SECONDS} s")


def check_pages(port: int) -> None:
    status, page = fetch(f"http://127.0.0.1:{port}/login")
    form = [b'<form method="post" action="/login"', b'name="password"', b'name="csrf_token"']
    if status != 200 or not all(part in page for part in form):
        raise SmokeFailed(f"/login answered {status} without its sign-in form:\n{page[:500]!r}")
    status, stylesheet = fetch(f"http://127.0.0.1:{port}/static/style.css")
    if status != 200 or stylesheet != (PACKAGE / "web/static/style.css").read_bytes():
        raise SmokeFailed(f"/static/style.css answered {status}, not the checkout's stylesheet")
    status, _ = fetch(f"http://127.0.0.1:{port + 1}/_sim/phone")
    if status != 200:
        raise SmokeFailed(f"the simulator's phone page answered {status}")


def smoke_demo(twofa: Path, scratch: Path) -> None:
    port = free_port_pair()
    log = scratch / "demo.log"
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command: list[str | Path] = [
        twofa,
        "demo",
        "--port",
        str(port),
        "--database",
        scratch / "demo.db",
    ]
    with log.open("wb") as output:
        demo = subprocess.Popen(  # noqa: S603
            command, cwd=scratch, env=environment, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped whole below
        )  # fmt: skip
    try:
        wait_until_healthy(demo, port)
        check_pages(port)
        print(f"wheel-smoke: twofa demo from the wheel served /healthz, /login, /static on {port}")
    except SmokeFailed as failure:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SmokeFailed(f"{failure}\n--- twofa demo's output, last lines:\n{tail}") from None
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="twofa-wheel-smoke-") as directory:
        scratch = Path(directory)  # outside the checkout: nothing can import from src/
        try:
            wheel = build_wheel(scratch)
            check_contents(wheel)
            smoke_demo(install(wheel, scratch), scratch)
        except SmokeFailed as failure:
            print(f"wheel-smoke: FAILED: {failure}", file=sys.stderr)
            return 1
    print(f"wheel-smoke: passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

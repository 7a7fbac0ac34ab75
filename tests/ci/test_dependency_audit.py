"""The dependency audit (.ci/audit_dependencies.py) fails on a pinned release with a known
advisory, offline against its snapshot and live against a vulnerability service, unless the
advisory is accepted with a reason; being offline alone never fails it. No test leaves the
machine: the live one talks to a stand-in for OSV on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / ".ci" / "audit_dependencies.py"
ADVISORY = "GHSA-test-0000-0001"


def pinned_jinja2() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.lower() == "jinja2":
            return version
    raise AssertionError("constraints.txt pins no jinja2")


def audit(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(AUDIT), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def write_snapshot(path: Path, advisories: list[dict[str, object]]) -> Path:
    snapshot = {"audited_on": "2026-01-02", "source": "test", "pins": {}, "advisories": advisories}
    path.write_text(json.dumps(snapshot))
    return path


def jinja2_advisory(version: str) -> dict[str, object]:
    return {
        "package": "Jinja2",
        "version": version,
        "id": ADVISORY,
        "aliases": ["CVE-2099-0001"],
        "fix_versions": ["99.0"],
        "description": "Sandbox escape",
    }


def audit_offline(
    tmp_path: Path, snapshot: Path, accepted: str = ""
) -> subprocess.CompletedProcess[str]:
    ignores = tmp_path / "accepted-vulnerabilities.txt"
    ignores.write_text(accepted)
    return audit("--offline", "--snapshot", str(snapshot), "--ignores", str(ignores))


def test_offline_audit_fails_on_a_pinned_release_the_snapshot_lists_as_vulnerable(
    tmp_path: Path,
) -> None:
    pin = pinned_jinja2()
    snapshot = write_snapshot(tmp_path / "snapshot.json", [jinja2_advisory(pin)])

    result = audit_offline(tmp_path, snapshot)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"VULNERABLE: jinja2=={pin}: {ADVISORY}" in result.stdout
    assert "FAILED" in result.stdout


def test_offline_audit_passes_with_an_empty_snapshot_and_says_it_ran_offline(
    tmp_path: Path,
) -> None:
    result = audit_offline(tmp_path, write_snapshot(tmp_path / "snapshot.json", []))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OFFLINE" in result.stdout
    assert "dated 2026-01-02" in result.stdout


def test_an_advisory_for_another_release_of_a_pinned_package_does_not_fail(
    tmp_path: Path,
) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot.json", [jinja2_advisory("0.0.1")])

    result = audit_offline(tmp_path, snapshot)

    assert result.returncode == 0, result.stdout + result.stderr


def test_an_advisory_accepted_by_an_alias_with_a_reason_passes_and_shows_the_reason(
    tmp_path: Path,
) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot.json", [jinja2_advisory(pinned_jinja2())])

    result = audit_offline(
        tmp_path, snapshot, "# accepted\nCVE-2099-0001  twofa renders no untrusted template\n"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "twofa renders no untrusted template" in result.stdout


def test_an_accepted_advisory_without_a_reason_is_refused(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot.json", [jinja2_advisory(pinned_jinja2())])

    result = audit_offline(tmp_path, snapshot, f"{ADVISORY}\n")

    assert result.returncode != 0
    assert "without a reason" in result.stderr


class StandInOsv(BaseHTTPRequestHandler):
    """Answers OSV's /v1/query as api.osv.dev does: one advisory for jinja2, none for the rest."""

    def do_POST(self) -> None:
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        vulns = [
            {
                "id": ADVISORY,
                "aliases": ["CVE-2099-0001"],
                "summary": "Sandbox escape",
                "affected": [
                    {
                        "package": {"name": "jinja2", "ecosystem": "PyPI"},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "0"}, {"fixed": "99.0"}],
                            }
                        ],
                    }
                ],
            }
        ]
        body = json.dumps({"vulns": vulns} if query["package"]["name"] == "jinja2" else {})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in_osv() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInOsv)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    server.server_close()


def test_live_audit_fails_on_a_vulnerable_pin_and_refreshes_the_snapshot(
    tmp_path: Path, stand_in_osv: str
) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"Jinja2=={pinned_jinja2()}\nsegno==1.6.6\n")
    snapshot = write_snapshot(tmp_path / "snapshot.json", [])
    ignores = tmp_path / "accepted-vulnerabilities.txt"
    ignores.write_text("")
    environment = {**os.environ, "PIP_AUDIT_OSV_URL": stand_in_osv}

    result = audit(
        *("--services", "osv", "--constraints", str(constraints), "--snapshot", str(snapshot)),
        *("--ignores", str(ignores)),
        env=environment,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    # pip-audit names an advisory by its CVE when it has one, the GHSA id becoming an alias
    assert f"VULNERABLE: jinja2=={pinned_jinja2()}: CVE-2099-0001 ({ADVISORY})" in result.stdout
    refreshed = json.loads(snapshot.read_text())
    assert refreshed["pins"] == {"jinja2": pinned_jinja2(), "segno": "1.6.6"}
    found = [
        (a["package"], a["version"], {a["id"], *a["aliases"]}) for a in refreshed["advisories"]
    ]
    assert found == [("jinja2", pinned_jinja2(), {ADVISORY, "CVE-2099-0001"})]
    assert refreshed["source"] == "pip-audit, osv service"

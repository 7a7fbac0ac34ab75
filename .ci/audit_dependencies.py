"""Audits the pinned set (constraints.txt, the run-time and development pins alike) for known
vulnerabilities, and keeps the snapshot of the last live audit that an offline run falls back to.

Live: pip-audit asks PyPI, then OSV, about every pin; the first service that answers for all of
them decides, and its findings refresh the snapshot. Offline (no service answered within the
budget, or --offline): the pins are checked against the snapshot, and the run says so with its
date. Either way a pin with a known advisory fails the run unless the ignore file accepts that
advisory with a reason; being offline alone never fails it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUEST_SECONDS = 10  # one request to a vulnerability service
# All live attempts together: where the services are blocked CI learns it fast and goes offline.
LIVE_BUDGET_SECONDS = 60
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


class ServiceUnavailable(Exception):
    """A vulnerability service could not answer for every pin."""


@dataclass(frozen=True)
class Advisory:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str

    def ids(self) -> set[str]:
        return {self.id, *self.aliases}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def advisory_from(entry: dict[str, Any], package: str, version: str) -> Advisory:
    """An advisory from pip-audit's JSON report or from the snapshot, which share the fields."""
    return Advisory(
        package=canonical(package),
        version=version,
        id=entry["id"],
        aliases=tuple(entry.get("aliases", ())),
        fix_versions=tuple(entry.get("fix_versions", ())),
        description=entry.get("description", ""),
    )


def read_pins(constraints: Path) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(constraints.read_text().splitlines(), 1):
        if not line.split("#", 1)[0].strip():
            continue
        pin = PIN.match(line.strip())
        if pin is None:  # a range cannot be audited: it names no single release
            sys.exit(f"audit: {constraints}:{number}: not an exact pin (name==version): {line}")
        pins[canonical(pin[1])] = pin[2]
    return pins


def read_ignores(path: Path) -> dict[str, str]:
    """Advisory id (or alias) -> why it is accepted; an entry without a reason is refused."""
    ignores = {}
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        advisory_id, _, reason = line.strip().partition(" ")
        if not reason.strip():
            sys.exit(f"audit: {path}:{number}: {advisory_id} is listed without a reason")
        ignores[advisory_id] = reason.strip()
    return ignores


def run_pip_audit(service: str, constraints: Path, seconds: float) -> list[Advisory]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [
            *(sys.executable, "-m", "pip_audit", "--requirement", str(constraints)),
            *("--no-deps", "--disable-pip", "--vulnerability-service", service),
            *("--format", "json", "--desc", "on", "--aliases", "on", "--output", str(report)),
            *("--timeout", str(REQUEST_SECONDS), "--progress-spinner", "off"),
        ]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=seconds)  # noqa: S603
        except subprocess.TimeoutExpired:
            raise ServiceUnavailable(f"no complete answer within {seconds:.0f} s") from None
        if not report.exists():  # pip-audit writes its report only when the audit completed
            last_line = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServiceUnavailable(last_line[:160])
        dependencies: list[dict[str, Any]] = json.loads(report.read_text())["dependencies"]
    # PyPI answers 404 for a release it will not describe, and pip-audit then skips the pin and
    # reports it clean: a pin it skipped was not audited, so that answer is incomplete.
    skipped = [dependency for dependency in dependencies if "skip_reason" in dependency]
    if skipped:
        example = skipped[0]["skip_reason"]
        raise ServiceUnavailable(
            f"{len(skipped)} of {len(dependencies)} pins unaudited ({example})"
        )
    return [
        advisory_from(vuln, dependency["name"], dependency["version"])
        for dependency in dependencies
        for vuln in dependency["vulns"]
    ]


def audit_live(constraints: Path, services: list[str]) -> tuple[str, list[Advisory]] | None:
    """The first service to answer for every pin, and its findings; None when none did."""
    deadline = time.monotonic() + LIVE_BUDGET_SECONDS
    for service in services:
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            print(f"audit: {service}: not tried, the {LIVE_BUDGET_SECONDS} s budget is spent")
            continue
        try:
            return service, run_pip_audit(service, constraints, remaining)
        except ServiceUnavailable as unavailable:
            print(f"audit: {service}: unavailable: {unavailable}")
    return None


def write_snapshot(path: Path, source: str, pins: dict[str, str], found: list[Advisory]) -> None:
    snapshot = {
        "audited_on": datetime.now(UTC).date().isoformat(),
        "source": source,
        "pins": pins,
        "advisories": [asdict(advisory) for advisory in found],
    }
    path.write_text(json.dumps(snapshot, indent=2) + "\n")


def check_against_snapshot(path: Path, pins: dict[str, str]) -> list[Advisory]:
    if not path.exists():
        sys.exit(f"audit: offline and no snapshot at {path}: run the audit where a service answers")
    snapshot = json.loads(path.read_text())
    print(
        f"audit: OFFLINE: checking {len(pins)} pins against the snapshot of the last live audit, "
        f"dated {snapshot['audited_on'] or 'never'} ({snapshot['source']}): {path}"
    )
    audited: dict[str, str] = snapshot["pins"]
    unaudited = [
        f"{name}=={version}" for name, version in pins.items() if audited.get(name) != version
    ]
    if len(unaudited) == len(pins):
        print(f"audit: none of the {len(pins)} pins was in that audit: offline they are unaudited")
    elif unaudited:  # pinned since: the next live audit covers them, offline nothing can
        print(f"audit: {len(unaudited)} pins are not in that audit: {', '.join(unaudited)}")
    advisories = [
        advisory_from(entry, entry["package"], entry["version"]) for entry in snapshot["advisories"]
    ]
    return [advisory for advisory in advisories if pins.get(advisory.package) == advisory.version]


def verdict(found: list[Advisory], ignores: dict[str, str], ignore_file: Path, basis: str) -> int:
    refused = []
    for advisory in found:
        accepted = sorted(advisory.ids() & ignores.keys())
        if accepted:
            print(f"audit: accepted {advisory.id} in {advisory.package}: {ignores[accepted[0]]}")
        else:
            refused.append(advisory)
    for advisory in refused:
        fixed_in = ", ".join(advisory.fix_versions) or "no fixed release yet"
        summary = advisory.description.strip().splitlines()[0][:120] if advisory.description else ""
        print(
            f"VULNERABLE: {advisory.package}=={advisory.version}: {advisory.id} "
            f"({', '.join(advisory.aliases) or 'no aliases'}), fixed in {fixed_in}. {summary}"
        )
    if refused:
        print(
            f"audit: FAILED: {len(refused)} known vulnerabilities in the pinned set. Raise the pin "
            f"in constraints.txt (and the bound in pyproject.toml), or accept the advisory in "
            f"{ignore_file} with the reason it does not reach twofa."
        )
        return 1
    print(f"audit: passed: {basis} lists no advisory for a pinned release but accepted ones")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="skip the live audit")
    parser.add_argument("--services", default="pypi,osv", help="pip-audit's, in order of trial")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--snapshot", type=Path, default=ROOT / ".ci/known-vulnerabilities.json")
    parser.add_argument("--ignores", type=Path, default=ROOT / ".ci/accepted-vulnerabilities.txt")
    args = parser.parse_args(argv)
    pins = read_pins(args.constraints)
    ignores = read_ignores(args.ignores)
    live = None if args.offline else audit_live(args.constraints, args.services.split(","))
    if live is None:
        found = check_against_snapshot(args.snapshot, pins)
        return verdict(found, ignores, args.ignores, "the snapshot")
    service, found = live
    write_snapshot(args.snapshot, f"pip-audit, {service} service", pins, found)
    print(f"audit: live ({service}): {len(pins)} pins audited; refreshed {args.snapshot}")
    return verdict(found, ignores, args.ignores, f"the live audit ({service})")


if __name__ == "__main__":
    sys.exit(main())

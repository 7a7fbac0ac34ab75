"""`twofa duo set --factors` and `twofa duo show`: which Duo factors users may be offered, set
from the command line like the console's Advanced Settings, refused when unworkable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RunningSimulator
from tests.unit.cli.conftest import TwofaCli
from tests.unit.cli.test_duo_cli import keys, saved_duo
from twofa.config import DuoFactor


@pytest.fixture
def skey_file(tmp_path: Path, simulator: RunningSimulator) -> Path:
    path = tmp_path / "duo-skey.txt"
    path.write_text(f"{simulator.skey}\n", encoding="utf-8")
    return path


def test_factors_are_saved_and_shown(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file), "--factors", "sms, push,phone")

    saved = saved_duo(cli)
    assert saved is not None
    assert saved.allowed_factors == (DuoFactor.PUSH, DuoFactor.PHONE, DuoFactor.SMS)
    shown = json.loads(cli.ok("duo", "show", "--json").stdout)
    assert shown["allowed factors"] == "push, phone, sms"


def test_factors_left_out_keep_the_saved_ones(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file), "--factors", "push,phone")

    cli.ok("duo", "set", "--push-type", "Sign-in")

    saved = saved_duo(cli)
    assert saved is not None
    assert saved.allowed_factors == (DuoFactor.PUSH, DuoFactor.PHONE)


def test_defaults_are_push_and_passcodes(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file))

    saved = saved_duo(cli)
    assert saved is not None
    assert saved.allowed_factors == (DuoFactor.PUSH, DuoFactor.PASSCODE)


@pytest.mark.parametrize(
    ("factors", "problem"),
    [
        ("phone,sms", "--factors: allow Duo Push or Duo Mobile passcodes too"),
        ("push,fax", "use a comma-separated list of: push, phone, sms, passcode"),
    ],
)
def test_unworkable_or_unknown_factors_are_refused(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path, factors: str, problem: str
) -> None:
    result = cli("duo", "set", *keys(simulator, skey_file), "--factors", factors)

    assert result.exit_code == 2
    assert problem in result.stderr
    assert saved_duo(cli) is None

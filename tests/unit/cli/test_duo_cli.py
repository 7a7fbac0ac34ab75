"""`twofa duo …` and `twofa settings two-factor …`: Duo keys proven against the test simulator
before they are saved, the secret read only from a file or stdin and never printed, `test`
exit codes, and the Two Factor Settings from the command line; every change audited as "cli"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RunningSimulator
from tests.support.servers import free_port
from tests.unit.cli.conftest import TwofaCli
from twofa.services.runtime import Gateway
from twofa.services.settings.duo import DuoConsoleConfig
from twofa.services.settings.two_factor import Enforcement, TwoFactorConfig

WRONG_SKEY = "wrongsecretwrongsecretwrongsecretwrong00"


@pytest.fixture
def skey_file(tmp_path: Path, simulator: RunningSimulator) -> Path:
    path = tmp_path / "duo-skey.txt"
    path.write_text(f"{simulator.skey}\n", encoding="utf-8")
    return path


def keys(simulator: RunningSimulator, skey_file: Path) -> list[str]:
    return ["--ikey", simulator.ikey, "--skey-file", str(skey_file), "--host", simulator.base_url]


def saved_duo(cli: TwofaCli) -> DuoConsoleConfig | None:
    async def read(gateway: Gateway) -> DuoConsoleConfig | None:
        return await gateway.console.duo()

    return cli.query(read)


def saved_two_factor(cli: TwofaCli) -> TwoFactorConfig:
    async def read(gateway: Gateway) -> TwoFactorConfig:
        return await gateway.console.two_factor()

    return cli.query(read)


# ---- twofa duo set ----------------------------------------------------------------------


def test_set_saves_keys_duo_accepts(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    result = cli.ok(
        "duo", "set", *keys(simulator, skey_file),
        "--failmode", "safe", "--push-type", "Sign-in", "--application-name", "Jira",
        "--no-autopush", "--pushes-per-minute", "5", "--pushes-per-day", "12",
        "--fraud-pause-minutes", "120",
    )  # fmt: skip

    assert "saved; Duo answered: keys are valid" in result.stdout
    saved = saved_duo(cli)
    assert saved is not None
    assert (saved.ikey, saved.api_hostname, saved.failmode.value) == (
        simulator.ikey,
        simulator.base_url,
        "safe",
    )
    assert (saved.push_type, saved.application_name, saved.autopush) == ("Sign-in", "Jira", False)
    assert saved.pushes_per_minute == 5
    assert (saved.pushes_per_day, saved.fraud_pause_minutes) == (12, 120)


def test_set_is_audited_as_cli_with_the_secret_redacted(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file))

    [event] = [row for row in cli.audit_rows() if row.kind == "settings_duo"]
    assert (event.outcome, event.username) == ("saved", "cli")
    assert event.detail["after"]["skey_sealed"] == "(set)"
    assert simulator.skey not in json.dumps(event.detail)


def test_set_reads_the_secret_from_stdin(cli: TwofaCli, simulator: RunningSimulator) -> None:
    cli.ok(
        "duo", "set", "--ikey", simulator.ikey, "--host", simulator.base_url, "--skey-stdin",
        input=f"{simulator.skey}\n",
    )  # fmt: skip

    saved = saved_duo(cli)
    assert saved is not None
    assert saved.has_secret


def test_the_secret_is_never_a_plain_option(cli: TwofaCli, simulator: RunningSimulator) -> None:
    result = cli("duo", "set", "--ikey", simulator.ikey, "--skey", simulator.skey)

    assert result.exit_code == 2
    assert "No such option" in result.output
    assert saved_duo(cli) is None


def test_a_secret_from_file_and_stdin_at_once_is_a_usage_error(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    result = cli("duo", "set", *keys(simulator, skey_file), "--skey-stdin", input="x\n")

    assert result.exit_code == 2
    assert "give one of them, not both" in result.output


def test_an_omitted_secret_keeps_the_stored_one(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file))
    skey_file.unlink()

    cli.ok("duo", "set", "--application-name", "Confluence")

    saved = saved_duo(cli)
    assert saved is not None
    assert (saved.ikey, saved.application_name) == (simulator.ikey, "Confluence")
    assert "connected" in cli.ok("duo", "test").stdout


def test_a_wrong_secret_is_refused_by_option_name_and_nothing_is_saved(
    cli: TwofaCli, simulator: RunningSimulator, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(WRONG_SKEY, encoding="utf-8")

    result = cli("duo", "set", "--ikey", simulator.ikey, "--skey-file", str(wrong), "--host",
                 simulator.base_url)  # fmt: skip

    assert result.exit_code == 2
    assert "--skey-file / --skey-stdin: Duo refused the signature: the secret key is wrong" in (
        result.stderr
    )
    assert "nothing was saved" in result.stderr
    assert WRONG_SKEY not in result.output
    assert saved_duo(cli) is None


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--ikey", "DIXXXXXXXXXXXXXXXXXX", "--ikey: Duo does not know this integration key"),
        ("--ikey", "DI123", "--ikey: an integration key is 20 characters"),
        ("--host", "http://duo.example.com", "--host: plain http is only allowed"),
        ("--pushes-per-minute", "0", "--pushes-per-minute: between 1 and 60"),
        ("--pushes-per-day", "501", "--pushes-per-day: between 1 and 500"),
        ("--fraud-pause-minutes", "0", "--fraud-pause-minutes: between 1 and 10080"),
    ],
)
def test_bad_values_are_refused_by_option_name(
    cli: TwofaCli,
    simulator: RunningSimulator,
    skey_file: Path,
    option: str,
    value: str,
    problem: str,
) -> None:
    result = cli("duo", "set", *keys(simulator, skey_file), option, value)

    assert result.exit_code == 2
    assert problem in result.stderr
    assert saved_duo(cli) is None


def test_an_unreachable_host_is_refused(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}"

    result = cli("duo", "set", *keys(simulator, skey_file), "--host", nobody_listens)

    assert result.exit_code == 2
    assert "--host: cannot reach 127.0.0.1:" in result.stderr


def test_set_needs_a_migrated_database(
    fresh_cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    result = fresh_cli("duo", "set", *keys(simulator, skey_file))

    assert result.exit_code == 2
    assert "twofa db upgrade" in result.stderr


# ---- twofa duo test and show ------------------------------------------------------------


def test_test_prints_duos_clock_for_working_keys(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file))

    result = cli.ok("duo", "test")

    assert result.stdout.startswith("connected: Duo's clock differs by ")
    assert result.stdout.rstrip().endswith(" s")


def test_test_fails_with_exit_2_when_nothing_is_configured(cli: TwofaCli) -> None:
    result = cli("duo", "test")

    assert result.exit_code == 2
    assert "integration key: Duo Push is not configured yet" in result.stderr


def test_test_names_the_problem_with_the_keys_in_force(
    cli: TwofaCli, simulator: RunningSimulator
) -> None:
    env = {
        **cli.env,
        "TWOFA_DUO__IKEY": simulator.ikey,
        "TWOFA_DUO__SKEY": WRONG_SKEY,
        "TWOFA_DUO__API_HOSTNAME": simulator.base_url,
    }

    result = TwofaCli(cli.runner, env)("duo", "test")

    assert result.exit_code == 2
    assert "secret key: Duo refused the signature: the secret key is wrong" in result.stderr


def test_show_never_prints_the_secret(
    cli: TwofaCli, simulator: RunningSimulator, skey_file: Path
) -> None:
    cli.ok("duo", "set", *keys(simulator, skey_file))

    shown = cli.ok("duo", "show").stdout

    assert "secret key:" in shown
    assert "secret key:        set" in shown
    assert f"integration key:   {simulator.ikey}" in shown
    assert "source:            console" in shown
    assert simulator.skey not in shown
    as_json = json.loads(cli.ok("duo", "show", "--json").stdout)
    assert (as_json["secret key"], as_json["source"]) == ("set", "console")
    assert (as_json["pushes per day"], as_json["fraud pause"]) == ("20", "60 minutes")


def test_show_before_any_keys_says_not_configured(cli: TwofaCli) -> None:
    as_json = json.loads(cli.ok("duo", "show", "--json").stdout)

    assert (as_json["source"], as_json["secret key"]) == ("not configured", "not set")


# ---- twofa settings two-factor ----------------------------------------------------------


def test_two_factor_show_starts_from_the_defaults(cli: TwofaCli) -> None:
    shown = cli.ok("settings", "two-factor", "show").stdout

    assert "methods:              duo_push" in shown
    assert "backup method:        none" in shown
    assert "remember device days: 0 (off)" in shown


def test_two_factor_set_changes_only_the_options_given(cli: TwofaCli) -> None:
    cli.ok("settings", "two-factor", "set", "--grace-days", "7")

    cli.ok("settings", "two-factor", "set", "--enforcement", "everyone",
           "--remember-device-days", "30")  # fmt: skip

    assert saved_two_factor(cli) == TwoFactorConfig(
        enforcement=Enforcement.EVERYONE,
        grace_days=7,
        remember_device_days=30,
    )
    as_json = json.loads(cli.ok("settings", "two-factor", "show", "--json").stdout)
    assert (as_json["enforcement"], as_json["grace_days"]) == ("everyone", 7)


def test_two_factor_set_is_audited_as_cli(cli: TwofaCli) -> None:
    cli.ok("settings", "two-factor", "set", "--grace-postponements", "3")

    [event] = [row for row in cli.audit_rows() if row.kind == "settings_two_factor"]
    assert (event.username, event.detail["before"]["grace_postponements"]) == ("cli", 0)
    assert event.detail["after"]["grace_postponements"] == 3


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--backup", "required"], "--backup-method: choose the backup method users set up"),
        (["--method", "sms"], "--method: unknown methods: sms"),
        (["--first-method", "totp"], "--first-method: must be one of the allowed methods"),
        (["--remember-device-days", "400"], "--remember-device-days: between 0 and 365"),
    ],
)
def test_two_factor_set_refuses_bad_values_by_option_name(
    cli: TwofaCli, arguments: list[str], problem: str
) -> None:
    result = cli("settings", "two-factor", "set", *arguments)

    assert result.exit_code == 2
    assert problem in result.stderr
    assert saved_two_factor(cli) == TwoFactorConfig()


def test_two_factor_set_refuses_an_unknown_backup_policy(cli: TwofaCli) -> None:
    result = cli("settings", "two-factor", "set", "--backup", "sometimes")

    assert result.exit_code == 2
    assert "Invalid value for '--backup'" in result.output

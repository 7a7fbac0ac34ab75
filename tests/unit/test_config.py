"""Settings: defaults, a TOML file, `TWOFA_*` variables and `*_FILE` secrets, in that order of
precedence; every problem reported at once. Never reads the real environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from twofa.config import PLACEHOLDER_SECRET, FailMode, Mode, load_settings
from twofa.errors import ConfigurationError

GOOD_SECRET = "a-perfectly-fine-production-secret-0123456789"


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "twofa.toml"
    path.write_text(text, "utf-8")
    return path


def write_secret(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n", "utf-8")  # a trailing newline, as editors leave it
    return path


def test_defaults_in_dev_mode() -> None:
    settings = load_settings(environ={"TWOFA_MODE": "dev"})
    assert settings.mode is Mode.DEV
    assert settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET
    assert settings.database_url == "sqlite+aiosqlite:///var/twofa.db"
    assert settings.allowed_redirect_hosts == ()
    assert settings.session_idle_minutes == 30
    assert settings.login_failures_per_user == 5
    assert (settings.login_failures_per_ip, settings.lockout_minutes) == (20, 15)
    assert settings.login_failures_per_user_all_networks == 100
    assert settings.login_slowdown_max_seconds == 16
    assert settings.duo.failmode is FailMode.SECURE
    assert settings.duo.pushes_per_minute == 3
    assert (settings.duo.pushes_per_day, settings.duo.fraud_pause_minutes) == (20, 60)
    assert not settings.duo.configured


def test_the_every_network_limit_must_exceed_one_networks() -> None:
    with pytest.raises(ConfigurationError, match="login_failures_per_user_all_networks"):
        load_settings(
            environ={
                "TWOFA_MODE": "dev",
                "TWOFA_LOGIN_FAILURES_PER_USER": "10",
                "TWOFA_LOGIN_FAILURES_PER_USER_ALL_NETWORKS": "10",
            }
        )


def test_real_environment_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_SESSION_IDLE_MINUTES", "99")
    settings = load_settings(environ={"TWOFA_MODE": "dev"})
    assert settings.session_idle_minutes == 30


def test_toml_file_values_are_used(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        f"""
mode = "production"
secret_key = "{GOOD_SECRET}"
public_url = "https://login.example.com"
allowed_redirect_hosts = ["jira.example.com"]
session_idle_minutes = 45

[duo]
ikey = "DIFROMTOML"
failmode = "safe"
""",
    )
    settings = load_settings(config_file=config, environ={})
    assert settings.mode is Mode.PRODUCTION
    assert settings.session_idle_minutes == 45
    assert settings.allowed_redirect_hosts == ("jira.example.com",)
    assert settings.cookie_secure
    assert settings.duo.ikey == "DIFROMTOML"
    assert settings.duo.failmode is FailMode.SAFE


def test_environment_overrides_toml_and_nests_with_double_underscore(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'mode = "dev"\nsession_idle_minutes = 45\n[duo]\nikey = "DIFROMTOML"\nskey = "tomlskey"\n',
    )
    environ = {"TWOFA_SESSION_IDLE_MINUTES": "10", "TWOFA_DUO__IKEY": "DIFROMENV"}
    settings = load_settings(config_file=config, environ=environ)
    assert settings.session_idle_minutes == 10
    assert settings.duo.ikey == "DIFROMENV"
    assert settings.duo.skey.get_secret_value() == "tomlskey"  # the rest of [duo] is kept


def test_config_file_can_be_named_by_environment(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'mode = "demo"\n')
    settings = load_settings(environ={"TWOFA_CONFIG": str(config)})
    assert settings.is_demo


def test_secret_files_override_environment(tmp_path: Path) -> None:
    secret = write_secret(tmp_path, "secret_key", GOOD_SECRET)
    skey = write_secret(tmp_path, "duo_skey", "skey-from-file")
    environ = {
        "TWOFA_SECRET_KEY": "an-environment-secret-that-is-long-enough",
        "TWOFA_SECRET_KEY_FILE": str(secret),
        "TWOFA_DUO__SKEY": "skey-from-env",
        "TWOFA_DUO__SKEY_FILE": str(skey),
    }
    settings = load_settings(environ=environ)
    assert settings.secret_key.get_secret_value() == GOOD_SECRET
    assert settings.duo.skey.get_secret_value() == "skey-from-file"


def test_duo_is_configured_when_all_three_keys_are_set() -> None:
    environ = {
        "TWOFA_MODE": "dev",
        "TWOFA_DUO__IKEY": "DIXXXXXXXXXXXXXXXXXX",
        "TWOFA_DUO__SKEY": "s" * 40,
        "TWOFA_DUO__API_HOSTNAME": "api-xxxxxxxx.duosecurity.com",
    }
    assert load_settings(environ=environ).duo.configured


def test_unreadable_secret_file_names_the_variable_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "secret"
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={"TWOFA_SECRET_KEY_FILE": str(missing)})
    message = str(caught.value)
    assert "TWOFA_SECRET_KEY_FILE" in message
    assert str(missing) in message
    assert "No such file" in message


def test_unknown_environment_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="sesion_idle_minutes"):
        load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_SESION_IDLE_MINUTES": "5"})


def test_unknown_nested_environment_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"duo\.ikye"):
        load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_DUO__IKYE": "x"})


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'mode = "dev"\nlockout_minuets = 3\n[duo]\nfailmod = "safe"\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config_file=config, environ={})
    assert "lockout_minuets" in str(caught.value)
    assert "duo.failmod" in str(caught.value)


def test_other_variables_are_ignored() -> None:
    settings = load_settings(environ={"TWOFA_MODE": "dev", "HOME": "/root", "PATH": "/bin"})
    assert settings.mode is Mode.DEV


def test_several_problems_are_reported_in_one_message(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "bogus_from_file = 1\n")
    environ = {
        "TWOFA_MODE": "dev",
        "TWOFA_BOGUS_FROM_ENV": "1",
        "TWOFA_SESSION_IDLE_MINUTES": "0",
        "TWOFA_DUO__FAILMODE": "sometimes",
    }
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config_file=config, environ=environ)
    message = str(caught.value)
    for problem in ("bogus_from_file", "bogus_from_env", "session_idle_minutes", "duo.failmode"):
        assert problem in message


def test_unreadable_secret_file_is_reported_with_other_problems(tmp_path: Path) -> None:
    environ = {"TWOFA_SECRET_KEY_FILE": str(tmp_path / "missing"), "TWOFA_BOGUS": "1"}
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    assert "TWOFA_SECRET_KEY_FILE" in str(caught.value)
    assert "bogus" in str(caught.value)


def test_placeholder_secret_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_settings(environ={})
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_settings(environ={"TWOFA_MODE": "production", "TWOFA_SECRET_KEY": PLACEHOLDER_SECRET})


@pytest.mark.parametrize("mode", ["dev", "demo"])
def test_placeholder_secret_is_accepted_outside_production(mode: str) -> None:
    settings = load_settings(environ={"TWOFA_MODE": mode})
    assert settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET


def test_production_accepts_a_real_secret() -> None:
    settings = load_settings(environ={"TWOFA_SECRET_KEY": GOOD_SECRET})
    assert settings.mode is Mode.PRODUCTION


@pytest.mark.parametrize("mode", ["production", "dev"])
def test_secret_shorter_than_32_characters_is_refused(mode: str) -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_settings(environ={"TWOFA_MODE": mode, "TWOFA_SECRET_KEY": "x" * 31})
    assert load_settings(environ={"TWOFA_MODE": mode, "TWOFA_SECRET_KEY": "x" * 32})


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        load_settings(environ={"TWOFA_MODE": "staging"})


def test_allowed_redirect_hosts_is_a_comma_list() -> None:
    environ = {
        "TWOFA_MODE": "dev",
        "TWOFA_ALLOWED_REDIRECT_HOSTS": " jira.example.com, wiki.example.com ,,",
    }
    settings = load_settings(environ=environ)
    assert settings.allowed_redirect_hosts == ("jira.example.com", "wiki.example.com")


def test_empty_allowed_redirect_hosts_is_empty() -> None:
    settings = load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_ALLOWED_REDIRECT_HOSTS": ""})
    assert settings.allowed_redirect_hosts == ()


def test_malformed_toml_is_a_configuration_error(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "mode = \n")
    with pytest.raises(ConfigurationError, match="cannot read settings file"):
        load_settings(config_file=config, environ={})


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={"TWOFA_MODE": "dev"})
    with pytest.raises(ValueError, match="frozen"):
        settings.session_idle_minutes = 1


def test_directory_groups_are_cached_for_five_minutes_unless_told_otherwise() -> None:
    assert load_settings(environ={"TWOFA_MODE": "dev"}).directory_groups_cache_s == 300
    only_at_sign_in = load_settings(
        environ={"TWOFA_MODE": "dev", "TWOFA_DIRECTORY_GROUPS_CACHE_S": "0"}
    )
    assert only_at_sign_in.directory_groups_cache_s == 0


def test_a_negative_directory_groups_cache_time_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="directory_groups_cache_s"):
        load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_DIRECTORY_GROUPS_CACHE_S": "-1"})


def test_a_redis_url_is_a_secret_read_from_a_file_too(tmp_path: Path) -> None:
    url_file = tmp_path / "redis-url"
    url_file.write_text("redis://:hunter2-secret@redis.internal:6379/0\n")
    settings = load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_REDIS_URL_FILE": str(url_file)})
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:hunter2-secret@redis.internal:6379/0"
    assert "hunter2" not in repr(settings)
    assert settings.redis_channel == "twofa:changes"


def test_a_redis_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"redis_url.*must start with redis://"):
        load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_REDIS_URL": "http://redis:6379"})

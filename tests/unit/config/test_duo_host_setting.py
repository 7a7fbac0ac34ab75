"""The Duo API hostname in the settings file and environment: Duo's own hosts always; any
other host (a simulator, an internal proxy) only in dev or demo mode or with
`duo.allow_custom_host`."""

from __future__ import annotations

import pytest

from twofa.config import Mode, load_settings
from twofa.errors import ConfigurationError

GOOD_SECRET = "a-perfectly-fine-production-secret-0123456789"
PRODUCTION = {"TWOFA_MODE": "production", "TWOFA_SECRET_KEY": GOOD_SECRET}
ELSEWHERE = [
    "http://127.0.0.1:8081",
    "https://internal.example:8443",
    "api-x.duosecurity.com.evil.test",
]


@pytest.mark.parametrize("host", ELSEWHERE)
def test_attack_production_settings_refuse_a_host_that_is_not_duos(host: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(environ={**PRODUCTION, "TWOFA_DUO__API_HOSTNAME": host})
    assert "duo.api_hostname" in str(refused.value)
    assert "is not a Duo API host" in str(refused.value)
    assert "duo.allow_custom_host" in str(refused.value)  # says how to allow it


@pytest.mark.parametrize("host", ELSEWHERE)
def test_allow_custom_host_accepts_any_host_in_production(host: str) -> None:
    environ = {
        **PRODUCTION,
        "TWOFA_DUO__API_HOSTNAME": host,
        "TWOFA_DUO__ALLOW_CUSTOM_HOST": "true",
    }
    settings = load_settings(environ=environ)
    assert settings.duo.api_hostname == host
    assert settings.duo_custom_host_allowed


@pytest.mark.parametrize("mode", [Mode.DEV, Mode.DEMO])
def test_dev_and_demo_modes_accept_a_local_simulator(mode: Mode) -> None:
    settings = load_settings(environ={"TWOFA_MODE": mode.value}, duo={"api_hostname": ELSEWHERE[0]})
    assert settings.duo.api_hostname == ELSEWHERE[0]
    assert settings.duo_custom_host_allowed
    assert not settings.duo.allow_custom_host  # allowed by the mode, not the setting


def test_production_accepts_duos_own_host_and_allows_no_other_by_default() -> None:
    settings = load_settings(
        environ={**PRODUCTION, "TWOFA_DUO__API_HOSTNAME": "api-1234abcd.duosecurity.com"}
    )
    assert settings.duo.api_hostname == "api-1234abcd.duosecurity.com"
    assert not settings.duo.allow_custom_host
    assert not settings.duo_custom_host_allowed


def test_a_malformed_host_is_refused_in_every_mode() -> None:
    with pytest.raises(ConfigurationError, match="plain http"):
        load_settings(environ={"TWOFA_MODE": "dev", "TWOFA_DUO__API_HOSTNAME": "http://10.0.0.1"})

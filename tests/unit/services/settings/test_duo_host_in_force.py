"""A Duo API hostname that was allowed when it was saved (dev mode, or with
`duo.allow_custom_host`) is not dialled once the gateway runs without that allowance: Duo Push
is off, and the connection test says why."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from tests.conftest import RunningSimulator
from tests.unit.services.conftest import BROWSER, duo_settings, start_duo_gateway
from twofa.config import Mode, Settings
from twofa.services.runtime import Gateway
from twofa.services.settings.duo import DuoEdit

PRODUCTION_SECRET = "a-perfectly-fine-production-secret-0123456789"


async def test_a_simulator_saved_in_dev_mode_is_refused_in_production(
    database_url: str, simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    same_key = {"secret_key": SecretStr(PRODUCTION_SECRET)}  # what was sealed stays readable
    dev = await start_duo_gateway(duo_settings(database_url, simulator).model_copy(update=same_key))
    try:
        edit = DuoEdit(ikey=simulator.ikey, api_hostname=simulator.base_url, skey=simulator.skey)
        await dev.console.save_duo(edit, "admin", BROWSER)
        assert await dev.current_duo() is not None  # in force in dev mode
    finally:
        await dev.close()

    production = Settings(
        mode=Mode.PRODUCTION, secret_key=SecretStr(PRODUCTION_SECRET), database_url=database_url
    )
    gateway = await Gateway.start(production)
    try:
        with caplog.at_level(logging.ERROR, logger="twofa.services.runtime"):
            assert await gateway.current_duo() is None
        assert "Duo Push is off" in caplog.text
        connection = await gateway.console.test_connection()
        assert not connection.connected
        assert "is not a Duo API host" in connection.problems["api_hostname"]
    finally:
        await gateway.close()

"""The `[passwords]` section: argon2id's cost for local users' password hashes, with floors
that keep an edit from making stolen hashes cheap to guess."""

from __future__ import annotations

import pytest

from twofa.config import load_settings
from twofa.errors import ConfigurationError


def test_the_cost_comes_from_the_file_or_the_environment() -> None:
    settings = load_settings(
        environ={"TWOFA_MODE": "dev", "TWOFA_PASSWORDS__ARGON2_TIME_COST": "4"},
        passwords={"argon2_memory_kib": 131_072, "argon2_parallelism": 2},
    )
    assert (
        settings.passwords.argon2_time_cost,
        settings.passwords.argon2_memory_kib,
        settings.passwords.argon2_parallelism,
    ) == (4, 131_072, 2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("argon2_time_cost", 0),
        ("argon2_memory_kib", 8),
        ("argon2_memory_kib", 19_455),
        ("argon2_parallelism", 0),
        ("argon2_unknown", 1),
    ],
)
def test_a_cost_below_its_floor_or_an_unknown_key_is_refused(name: str, value: int) -> None:
    with pytest.raises(ConfigurationError, match=f"passwords.{name}"):
        load_settings(environ={"TWOFA_MODE": "dev"}, passwords={name: value})

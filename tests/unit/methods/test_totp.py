"""TOTP against RFC 6238's own vectors, and the single-use rule."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from twofa.methods.totp import (
    STEP_SECONDS,
    hotp,
    new_secret,
    provisioning_uri,
    time_step,
    verify,
)

RFC = json.loads((Path(__file__).parents[2] / "data" / "rfc6238_vectors.json").read_text())
NOW = datetime(2026, 11, 28, 12, 0, 15, tzinfo=UTC)


@pytest.mark.parametrize("vector", RFC["vectors"], ids=lambda v: str(v["time"]))
@pytest.mark.parametrize("digest", ["sha1", "sha256", "sha512"])
def test_rfc6238_vectors(vector: dict[str, Any], digest: str) -> None:
    key = RFC["seeds"][digest].encode("ascii")
    step = vector["time"] // STEP_SECONDS
    assert hotp(key, step, digits=8, digest=digest) == vector[digest]


def code_at(secret: str, moment: datetime) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return hotp(key, time_step(moment))


def test_current_code_is_accepted_and_reports_its_step() -> None:
    secret = new_secret()
    match = verify(secret, code_at(secret, NOW), NOW, None)
    assert match is not None
    assert match.step == time_step(NOW)


def test_one_step_of_clock_drift_either_way_is_tolerated_but_two_are_not() -> None:
    secret = new_secret()
    for drift, accepted in ((-1, True), (1, True), (-2, False), (2, False)):
        code = code_at(secret, NOW + timedelta(seconds=drift * STEP_SECONDS))
        assert (verify(secret, code, NOW, None) is not None) is accepted


def test_a_used_step_and_earlier_steps_can_never_be_used_again() -> None:
    secret = new_secret()
    code = code_at(secret, NOW)
    first = verify(secret, code, NOW, None)
    assert first is not None
    assert verify(secret, code, NOW, last_used_step=first.step) is None
    earlier = code_at(secret, NOW - timedelta(seconds=STEP_SECONDS))
    assert verify(secret, earlier, NOW, last_used_step=first.step) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert verify(new_secret(), code, NOW, None) is None


def test_secrets_are_random_base32_and_the_uri_names_the_issuer() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(base64.b32decode(first + "=" * (-len(first) % 8))) == 20
    uri = provisioning_uri(first, "alice", "twofa")
    assert uri.startswith("otpauth://totp/twofa%3Aalice?")
    assert f"secret={first}" in uri
    assert "issuer=twofa" in uri


@pytest.mark.parametrize(
    "code",
    ["\uff11\uff12\uff13\uff14\uff15\uff16", "\u0661\u0662\u0663\u0664\u0665\u0666", "12345\uff16"],
)
def test_non_ascii_digits_are_refused_not_crashed_on(code: str) -> None:
    secret = new_secret()
    assert verify(secret, code, NOW, None) is None

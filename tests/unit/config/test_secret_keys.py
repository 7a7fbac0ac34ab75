"""The secret key file holds one key a line, newest first, so a new key can be added before the
old one is retired; a one-line file reads as it always did, and every problem is named at once
by the key's line order, never by its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from twofa.config import PLACEHOLDER_SECRET, load_settings
from twofa.errors import ConfigurationError

NEWEST = "the-newest-key-of-this-gateway-0123456789"
OLDER = "an-older-key-kept-until-rotation-finishes-0"


def key_file(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "secret_key"
    path.write_text(text, "utf-8")
    return {"TWOFA_SECRET_KEY_FILE": str(path)}


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    return str(caught.value)


def test_a_one_line_key_file_is_one_key_as_before(tmp_path: Path) -> None:
    settings = load_settings(environ=key_file(tmp_path, f"{NEWEST}\n"))
    assert settings.secret_keys == (NEWEST,)
    assert settings.secret_key.get_secret_value() == NEWEST


def test_keys_are_read_newest_first_without_blank_lines_or_comments(tmp_path: Path) -> None:
    text = f"# June: drop the second key after `twofa keys rotate`\n{NEWEST}\n\n  {OLDER}  \n"
    settings = load_settings(environ=key_file(tmp_path, text))
    assert settings.secret_keys == (NEWEST, OLDER)


def test_a_short_key_among_several_is_named_by_its_line_not_its_value(tmp_path: Path) -> None:
    short = "too-short-a-key"
    message = refusal(key_file(tmp_path, f"{NEWEST}\n{short}\n"))
    assert "key 2 of 2 has 15 characters; each key must be at least 32" in message
    assert short not in message


def test_the_same_key_twice_is_refused(tmp_path: Path) -> None:
    message = refusal(key_file(tmp_path, f"{NEWEST}\n{OLDER}\n{NEWEST}\n"))
    assert "keys 1 and 3 are the same" in message
    assert NEWEST not in message


def test_every_key_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = refusal(key_file(tmp_path, f"short\n{OLDER}\n{OLDER}\n"))
    assert "key 1 of 3 has 5 characters" in message
    assert "keys 2 and 3 are the same" in message


def test_a_file_of_comments_only_has_no_key(tmp_path: Path) -> None:
    assert "no key" in refusal(key_file(tmp_path, "# the key goes here\n\n"))


def test_the_placeholder_is_refused_in_production_even_as_an_older_key(tmp_path: Path) -> None:
    message = refusal(key_file(tmp_path, f"{NEWEST}\n{PLACEHOLDER_SECRET}\n"))
    assert "key 2 of 2 is the development placeholder" in message


def test_outside_production_the_placeholder_may_be_listed(tmp_path: Path) -> None:
    environ = {"TWOFA_MODE": "dev", **key_file(tmp_path, f"{NEWEST}\n{PLACEHOLDER_SECRET}\n")}
    assert load_settings(environ=environ).secret_keys == (NEWEST, PLACEHOLDER_SECRET)

"""The one rule for a local user's new password: 12 characters at least, not the username, not
one of the most common passwords shipped with the package, whatever its case."""

from __future__ import annotations

import pytest

from twofa.security.password_rules import (
    MIN_PASSWORD_LENGTH,
    common_passwords,
    password_problem,
)


def test_eleven_characters_are_refused() -> None:
    assert password_problem("x7#kQ2mv!pL", "alice") == "at least 12 characters, this one has 11"


def test_twelve_characters_are_accepted() -> None:
    assert MIN_PASSWORD_LENGTH == 12
    assert password_problem("x7#kQ2mv!pLz", "alice") is None


def test_an_empty_password_is_refused() -> None:
    assert password_problem("", "alice") == "at least 12 characters, this one has 0"


@pytest.mark.parametrize(
    "common", ["qwertyuiop12", "QWERTYUIOP12", "Password1234", "LeaveMeAlone", "QWERTY123456"]
)
def test_a_common_password_is_refused_in_any_case(common: str) -> None:
    assert password_problem(common, "alice") == (
        "this is one of the most common passwords: choose one nobody would guess"
    )


@pytest.mark.parametrize("username", ["alexander-the-great", "Alexander-The-Great"])
def test_the_username_itself_is_refused(username: str) -> None:
    assert password_problem("ALEXANDER-the-great", username) == (
        "the password cannot be the username"
    )


def test_the_shipped_list_is_loaded_lower_case_without_its_header() -> None:
    listed = common_passwords()
    assert len(listed) > 10_000
    assert {"password", "qwertyuiop", "1qaz2wsx3edc"} <= listed
    assert all(entry == entry.lower() and not entry.startswith("#") for entry in listed)
    assert all(len(entry) >= 8 for entry in listed)  # shorter ones fail the length rule anyway


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("alexander-the-great1", "alexander-the-great"),  # the username and a digit
        ("Alexander-The-Great!!", "alexander-the-great"),
        ("alexander the great ", "alexander-the-great".replace("-", " ")),  # spaces dropped
    ],
)
def test_attack_the_username_with_something_added_is_refused(password: str, username: str) -> None:
    assert password_problem(password, username) == "the password cannot be the username"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("aaaaaaaaaaaa", "use at least 5 different characters"),
        (" " * 12, "use at least 5 different characters"),
        ("123456789012", "add letters: digits and symbols alone are guessed first"),
        ("password    ", "this is one of the most common passwords"),
        ("password\u200b\u200b\u200b\u200b", "this is one of the most common passwords"),
        (
            "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13\uff14",
            "this is one of the most common passwords",
        ),  # full-width password1234
        ("iloveyou1234", "this is one of the most common passwords"),
        ("Sunshine!2024", "this is one of the most common passwords"),
    ],
)
def test_attack_a_weak_password_dressed_up_to_pass_the_rule(password: str, problem: str) -> None:
    found = password_problem(password, "carol")
    assert found is not None
    assert found.startswith(problem)


def test_a_long_rare_password_passes() -> None:
    assert password_problem("correct horse battery staple", "carol") is None
    assert password_problem("alice-password-1", "alice") is None  # contains the name: fine

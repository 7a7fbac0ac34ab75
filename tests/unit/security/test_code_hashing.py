"""Slow hashes for backup codes and security answers: argon2id, salted, verifiable, and a
broken digest is a plain mismatch rather than a crash."""

from __future__ import annotations

import pytest

from twofa.security.code_hashing import hash_answer, hash_code, verify_answer, verify_code


def test_a_code_hash_is_salted_argon2id_and_verifies_only_its_code() -> None:
    first, second = hash_code("ABCDE12345"), hash_code("ABCDE12345")
    assert first.startswith("$argon2id$")
    assert first != second  # salted
    assert "ABCDE12345" not in first
    assert verify_code(first, "ABCDE12345")
    assert not verify_code(first, "ABCDE12346")
    assert not verify_code(first, "")


def test_answers_are_hashed_at_password_cost() -> None:
    digest = hash_answer("mr whiskers")
    assert verify_answer(digest, "mr whiskers")
    assert not verify_answer(digest, "Mr Whiskers")  # normalising is the method's job
    code_cost = hash_code("X").split("$")[3]
    answer_cost = digest.split("$")[3]
    memory = {name: int(value) for name, value in (p.split("=") for p in answer_cost.split(","))}
    assert memory["m"] > int(code_cost.split(",")[0].removeprefix("m="))


@pytest.mark.parametrize("digest", ["", "not-a-hash", "$argon2id$v=19$m=8,t=1,p=1$bad$bad"])
def test_a_broken_digest_never_verifies(digest: str) -> None:
    assert not verify_code(digest, "ABCDE12345")
    assert not verify_answer(digest, "anything")


def test_empty_values_are_not_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_code("")
    with pytest.raises(ValueError, match="empty"):
        hash_answer("")

"""`twofa keys rotate` must know every place a secret is sealed, or an old key could never be
removed safely: this lists every `seal(` call in the code and fails when one appears that the
rotation (services/admin/sealed_places.py) was not taught."""

from __future__ import annotations

import ast
from pathlib import Path

import twofa

SOURCE = Path(twofa.__file__).parent
# Each `seal(…, purpose)` call, and where the rotation finds what it sealed.
ROTATED = {
    ("services/mail/delivery.py", "PASSWORD_PURPOSE"),  # the smtp setting
    ("services/settings/console.py", "SKEY_PURPOSE"),  # the duo setting
    ("services/second_factor/challenges.py", "DRAFT_PURPOSE"),  # an open challenge
    ("services/second_factor/challenges.py", "SHOW_PURPOSE"),  # an open challenge
    ("services/second_factor/credential_store.py", "secret_purpose(row.id)"),  # credentials
    ("services/admin/key_rotation.py", "f.purpose"),  # the rotation itself
    ("services/idp/signing_keys.py", "SIGNING_KEY_PURPOSE"),  # OIDC signing keys
    ("services/idp/saml/keys.py", "SAML_KEY_PURPOSE"),  # SAML signing keys
}


def seal_calls() -> set[tuple[str, str]]:
    found = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "seal"
                and len(node.args) == 2
            ):
                found.add((path.relative_to(SOURCE).as_posix(), ast.unparse(node.args[1])))
    return found


def test_every_sealed_value_in_the_code_is_one_the_rotation_reseals() -> None:
    assert seal_calls() == ROTATED, (
        "a new sealed value: teach services/admin/sealed_places.py where it is kept, then "
        "list it here"
    )

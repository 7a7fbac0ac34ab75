"""One authenticator per registered method; `test_every_registered_method_is_covered` fails
when a method is registered without one, so no method skips the contract suite."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tests.contract.harness import Authenticator, Harness
from tests.support.authenticator_backup_codes import BackupCodeSheet
from tests.support.authenticator_email_otp import EmailReader
from tests.support.authenticator_security_questions import SecurityAnswers
from tests.support.authenticator_webauthn import SecurityKeyHolder
from twofa.methods.totp import hotp, secret_bytes, time_step


class TotpApp:
    code = "totp"

    def __init__(self) -> None:
        self._secret = ""

    def enrolment_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        self._secret = str(show["secret"]).replace(" ", "")
        return {"code": self._code(harness)}

    def verification_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        harness.clock.advance(
            timedelta(seconds=30)
        )  # a code works once: the app shows the next one
        return {"code": self._code(harness)}

    def wrong_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        right = self._code(harness)
        return {"code": "000000" if right != "000000" else "111111"}

    def _code(self, harness: Harness) -> str:
        return hotp(secret_bytes(self._secret), time_step(harness.clock.now()))


AUTHENTICATORS: dict[str, type[Authenticator]] = {
    "totp": TotpApp,
    "backup_codes": BackupCodeSheet,
    "security_questions": SecurityAnswers,
    "email_otp": EmailReader,
    "webauthn": SecurityKeyHolder,
}

"""What a person with the mailbox does for e-mail codes: read the latest message sent to them
and type the code it holds. `EmailReader` plays that part in the contract suite, reading the
harness's captured mailbox; the SMTP tests read the messages aiosmtpd received instead."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tests.contract.harness import Harness
from tests.support.smtp import code_in

# SecondFactorService refuses a new code within this many seconds of the last one; a person takes
# at least that long to open the mail and type the code.
READING_TIME = timedelta(seconds=30)


def latest_code(bodies: list[str]) -> str:
    assert bodies, "no e-mail was sent"
    return code_in(bodies[-1])


def other_code(code: str) -> str:
    """A well-formed code that is not `code`."""
    return str((int(code) + 1) % 1_000_000).zfill(6)


class EmailReader:
    code = "email_otp"

    def enrolment_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        harness.clock.advance(READING_TIME)
        return {"code": self._latest(harness)}

    def verification_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        return {"code": self._latest(harness)}

    def wrong_response(self, show: Mapping[str, Any], harness: Harness) -> dict[str, str]:
        return {"code": other_code(self._latest(harness))}

    def _latest(self, harness: Harness) -> str:
        return latest_code([delivery.body for delivery in harness.mailbox.messages])

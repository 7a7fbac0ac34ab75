"""What a person's authenticator app does: read the secret from the set-up page and show
the code for a time step."""

from __future__ import annotations

import re

from twofa.clock import SystemClock
from twofa.methods.totp import hotp, secret_bytes, time_step


def secret_from_page(html: str) -> str:
    found = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html)
    assert found, "no TOTP secret on the set-up page"
    return found.group(1).replace(" ", "")


def code_for(secret: str, step: int) -> str:
    return hotp(secret_bytes(secret), step)


def current_step() -> int:
    return time_step(SystemClock().now())


def code_at(secret: str, offset: int = 0) -> str:
    """The code for now + `offset` steps (the gateway accepts one step either side)."""
    return code_for(secret, current_step() + offset)

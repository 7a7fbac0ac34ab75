"""An admin's sign-in as the console requires it: the password, then Duo Push (set up at the
first sign-in, on a phone the test simulator knows, and approved there). A console session
without a second factor behind it is sent to verify first (see `services.second_factor.gate`),
so every test that uses the console signs its admins in this way."""

from __future__ import annotations

import httpx

from tests.conftest import RunningSimulator
from tests.support.authenticator_totp import code_for, current_step, secret_from_page
from tests.support.duo_flow import approve_push, send_push
from tests.support.gateway import sign_in
from tests.support.totp_flow import submit_code


def ensure_duo_phone(simulator: RunningSimulator, username: str) -> None:
    """Duo knows `username` with a phone (once: a second sign-in finds it there)."""
    known = simulator.control.get("/_sim/users").json()
    if not any(user["username"] == username for user in known):
        simulator.add_user(username)


async def pass_duo_push(
    client: httpx.AsyncClient, simulator: RunningSimulator, username: str
) -> None:
    """Answers the second-factor step the session is at with an approved push: the set-up at
    a first sign-in, the validation page at a later one, a step-up once signed in."""
    ensure_duo_phone(simulator, username)
    # /2fa shows a first sign-in its set-up; it sends a later one (or a signed-in session
    # confirming a change) on, and the validation page asks for the push.
    moved_on = "location" in (await client.get("/2fa")).headers
    page = "/2fa/validate" if moved_on else "/2fa/duo/setup"
    started = await send_push(client, page)
    assert started.status_code == 200, started.text
    answer = await approve_push(client, simulator, username, started.json()["challenge"])
    assert answer.json()["state"] == "allow", answer.text


async def sign_in_admin(
    client: httpx.AsyncClient, simulator: RunningSimulator, username: str, password: str
) -> None:
    """Signs an admin in with a password and an approved Duo Push; they end on the console's
    side of the gate."""
    answer = await sign_in(client, username, password)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/2fa", "an admin's sign-in asks for a second factor"
    await pass_duo_push(client, simulator, username)
    assert (await client.get("/admin")).status_code == 200


async def sign_in_admin_with_app(
    client: httpx.AsyncClient, username: str, password: str, step: int | None = None
) -> str:
    """Signs an admin in for the first time and sets up an authenticator app as their second
    factor (the admin's way in while Duo cannot be reached); returns the app's secret. The
    app must be among the methods the console allows; `step` is the gateway's time step when
    its clock is not the system's."""
    answer = await sign_in(client, username, password)
    assert answer.headers["location"] == "/2fa", answer.text
    page = await client.get("/2fa/m/totp/enrol")
    assert page.status_code == 200, page.text
    secret = secret_from_page(page.text)
    code = code_for(secret, current_step() if step is None else step)
    done = await submit_code(client, "/2fa/m/totp/enrol", page, code)
    assert done.status_code == 303, done.text
    assert (await client.get("/admin")).status_code == 200
    return secret

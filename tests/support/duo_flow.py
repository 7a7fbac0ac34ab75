"""Duo Push as a browser does it against the test simulator, shared by the tests that need a
user who has set up Duo Push (or who is about to)."""

from __future__ import annotations

import httpx

from tests.conftest import RunningSimulator
from tests.support.gateway import csrf_from, sign_in

JSON = {"Accept": "application/json"}


async def send_push(client: httpx.AsyncClient, page: str = "/2fa/duo/setup") -> httpx.Response:
    """Presses Send Me Push Notification on `page` (its CSRF token, the page's script's call)."""
    html = (await client.get(page)).text
    return await client.post("/2fa/duo/push", headers={**JSON, "X-CSRF-Token": csrf_from(html)})


async def approve_push(
    client: httpx.AsyncClient, simulator: RunningSimulator, username: str, challenge: str
) -> httpx.Response:
    """Approves the user's pending push on the simulated phone; the page's poll that follows."""
    pending = simulator.pending(username)
    assert len(pending) == 1, pending
    simulator.settle(str(pending[0]["txid"]), "approve")
    return await client.get(f"/2fa/duo/push/{challenge}", headers=JSON)


async def enrol_with_duo_push(
    client: httpx.AsyncClient, simulator: RunningSimulator, username: str = "alice"
) -> None:
    """Signs `username` in and sets up Duo Push with a phone Duo knows already; they end
    signed in, with Duo Push as their method."""
    simulator.add_user(username)
    assert (await sign_in(client, username)).status_code == 303
    started = await send_push(client)
    assert started.status_code == 200, started.text
    answer = await approve_push(client, simulator, username, started.json()["challenge"])
    assert answer.json()["state"] == "allow", answer.text
    assert (await client.get("/")).status_code == 200

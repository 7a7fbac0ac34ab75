"""The authenticator-app flow as a browser does it, shared by the tests that need a user with
a second factor set up."""

from __future__ import annotations

import httpx

from tests.support.authenticator_totp import code_for, current_step, secret_from_page
from tests.support.gateway import csrf_from, sign_in


def challenge_from(html: str) -> str:
    marker = 'name="challenge" value="'
    assert marker in html, "no challenge on the page"
    return html.split(marker, 1)[1].split('"', 1)[0]


async def submit_code(
    client: httpx.AsyncClient, url: str, page: httpx.Response, code: str, **extra: str
) -> httpx.Response:
    """Posts `code` on the form of `page` (its challenge), as the browser that shows it."""
    return await client.post(
        url,
        data={
            "csrf_token": csrf_from(page.text),
            "challenge": challenge_from(page.text),
            "code": code,
            **extra,
        },
    )


async def post_code(client: httpx.AsyncClient, url: str, code: str, **extra: str) -> httpx.Response:
    """Opens the code page at `url`, then answers it with `code`."""
    page = await client.get(url)
    assert page.status_code == 200, page.text
    return await submit_code(client, url, page, code, **extra)


async def enrol_alice(client: httpx.AsyncClient) -> str:
    """Signs alice in, sets up the app, returns its secret. She ends signed in."""
    secret, _ = await enrol_alice_at_step(client)
    return secret


async def enrol_alice_at_step(client: httpx.AsyncClient) -> tuple[str, int]:
    """As enrol_alice, and also the time step whose code confirmed the set-up (a test that
    reads the clock again later may find it one step on)."""
    assert (await sign_in(client, "alice")).headers["location"] == "/2fa"
    intro = await client.get("/2fa")
    assert "authenticator app" in intro.text
    assert 'href="/2fa/m/totp/enrol"' in intro.text
    page = await client.get("/2fa/m/totp/enrol")
    secret = secret_from_page(page.text)
    assert "<svg" in page.text  # the QR code
    step = current_step()
    answer = await submit_code(client, "/2fa/m/totp/enrol", page, code_for(secret, step))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/2fa/after?new=1"
    assert (await client.get("/2fa/after?new=1")).headers["location"] == "/"
    return secret, step


async def sign_out(client: httpx.AsyncClient) -> None:
    """Signs out if signed in (a session ended by the server needs nothing more)."""
    home = await client.get("/")
    if home.status_code == 200:
        await client.post("/logout", data={"csrf_token": csrf_from(home.text)})

"""Headers an attacker controls, through the built-in proxy and real nginx, Caddy and Traefik
(the shipped files), on SQLite and PostgreSQL: a forged X-Forwarded-For claims the office
network that a rule lets in without signing in, and an application under the cookie domain
reads the cookies it is sent, hoping for twofa's session. Neither works: the gateway takes the
address the nearest trusted proxy saw, every proxy sets that header from the address it saw,
and the application gets the browser's cookies without twofa's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_proxy_forward_auth import PROXIES, Site, sign_in_through_portal
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import SECRET, seed_users
from tests.support.protected_app import LoopbackTransport, protected_app
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings, load_settings
from twofa.web.app import create_app
from twofa.web.context import DEVICE_COOKIE, SESSION_COOKIE
from twofa.web.reverse_proxy import ReverseProxy

pytestmark = pytest.mark.integration
AUTH, APP = "auth.example.test", "app.example.test"
BUILT_IN = "built-in"
OFFICE = "10.1.2.3"  # the office network, let in by a rule without signing in
ALL_PROXIES = [BUILT_IN, *sorted(PROXIES)]


def settings_for(database_url: str, simulator: RunningSimulator, port: int) -> Settings:
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://{AUTH}:{port}",
        duo={"ikey": simulator.ikey, "skey": simulator.skey, "api_hostname": simulator.base_url},
        access={
            "domains": [APP],
            "cookie_domain": "example.test",
            "rules": [
                {"domain": APP, "networks": ["10.0.0.0/8"], "policy": "bypass"},
                {"domain": APP, "resources": ["/rest/api/*"], "policy": "bypass"},
                {"domain": APP, "policy": "two_factor"},
            ],
        },
    )


def start_proxy(stack: ExitStack, proxy: str, settings: Settings, port: int, home: Path) -> str:
    """The proxy in front of the app on `port`, and twofa behind it; returns twofa's URL."""
    app_url = stack.enter_context(serve_in_thread(protected_app()))
    if proxy == BUILT_IN:  # `twofa serve --upstream`: the portal and the app on one port
        stack.enter_context(serve_in_thread(ReverseProxy(create_app(settings), app_url), port=port))
        return f"http://127.0.0.1:{port}"
    twofa_url = stack.enter_context(serve_in_thread(create_app(settings)))
    backends = (twofa_url.removeprefix("http://"), app_url.removeprefix("http://"))
    stack.enter_context(PROXIES[proxy](home / proxy, port, *backends, AUTH, APP))
    return twofa_url


@pytest.fixture(
    params=[(p, db) for p in ALL_PROXIES for db in ("sqlite", "postgresql")],
    ids=lambda param: "-".join(param),
)
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[Site]:
    proxy, database = request.param
    port = free_port()
    factory = sqlite_database(tmp_path) if database == "sqlite" else postgres_database()
    async with factory as url:
        settings = settings_for(url, simulator, port)
        await seed_users(settings)
        with ExitStack() as stack:
            twofa_url = start_proxy(stack, proxy, settings, port, tmp_path)
            async with httpx.AsyncClient(transport=LoopbackTransport(), timeout=30) as browser:
                app_url, auth_url = f"http://{APP}:{port}", f"http://{AUTH}:{port}"
                yield Site(browser, simulator, app_url, auth_url, twofa_url)


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Forwarded-For": OFFICE},
        {"X-Forwarded-For": f"{OFFICE}, {OFFICE}"},
        {"X-Forwarded-For": f"{OFFICE}, 127.0.0.1"},  # as if a trusted proxy had added it
        {"X-Real-IP": OFFICE, "Forwarded": f"for={OFFICE}"},
    ],
)
async def test_attack_forged_x_forwarded_for_claims_the_office_network(
    site: Site, forged: dict[str, str]
) -> None:
    answer = await site.browser.get(f"{site.app_url}/browse/X-1", headers=forged)

    assert answer.status_code == 302, answer.text  # sent to sign in, not let in
    assert answer.headers["location"].startswith(f"{site.auth_url}/login")


async def test_the_app_sees_the_address_the_proxy_saw_not_the_forged_one(site: Site) -> None:
    forged = {"X-Forwarded-For": f"{OFFICE}, 127.0.0.1"}
    answer = await site.browser.get(f"{site.app_url}/rest/api/2/serverInfo", headers=forged)

    assert answer.status_code == 200, answer.text
    assert answer.json()["x-forwarded-for"] == "127.0.0.1"


async def test_attack_app_harvests_the_twofa_session_cookie(site: Site) -> None:
    site.simulator.add_user("alice")
    first = await site.browser.get(f"{site.app_url}/browse/X-1")
    await sign_in_through_portal(site, first.headers["location"])
    session = site.browser.cookies.get(SESSION_COOKIE)
    assert session, "alice's browser holds a twofa session for the cookie domain"
    site.browser.cookies.set("JSESSIONID", "jira-session", domain=APP)
    site.browser.cookies.set(DEVICE_COOKIE, "remembered-device", domain="example.test")

    app = await site.browser.get(f"{site.app_url}/browse/X-1")

    assert app.status_code == 200, app.text
    assert app.json()["remote-user"] == "alice"
    cookies = app.json()["cookie"]
    assert "JSESSIONID=jira-session" in cookies  # the app's own cookie still arrives
    assert SESSION_COOKIE not in cookies
    assert session not in cookies
    assert DEVICE_COOKIE not in cookies


async def test_a_request_with_only_twofas_cookie_reaches_the_app_with_none(site: Site) -> None:
    site.simulator.add_user("alice")
    first = await site.browser.get(f"{site.app_url}/browse/X-1")
    await sign_in_through_portal(site, first.headers["location"])

    app = await site.browser.get(f"{site.app_url}/browse/X-1")

    assert app.status_code == 200, app.text
    assert app.json()["remote-user"] == "alice"
    assert app.json()["cookie"] == ""


async def test_attack_the_sign_in_page_is_framed_or_re_based(site: Site) -> None:
    """A page of another site frames the portal's sign-in (clickjacking), or an injected
    `<base>` re-points its form: the browser is told to refuse both, and to post forms only
    to the portal and the protected domain a sign-in returns to."""
    first = await site.browser.get(f"{site.app_url}/browse/X-1")
    page = await site.browser.get(first.headers["location"])

    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "base-uri 'none'" in policy
    assert f"form-action 'self' {APP}" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in page.headers  # public_url is plain http here

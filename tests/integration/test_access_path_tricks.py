"""Path tricks against the access rules, through the built-in proxy and through real nginx,
Caddy and Traefik (with the shipped files), in front of an application that echoes the path
it received byte for byte.

Rules: `/public/*` bypass, `/admin/*` deny, `/private/*` two-factor, the rest one factor. Each
trick is sent raw (a socket, so no client library tidies it) by an anonymous browser and by
bob (signed in, one factor). For every answer: the application was never reached (400, 403 or
the sign-in redirect), or what it received is allowed for the identity it was sent, however
the application reads the path (decoded as it is, resolved as Tomcat does, decoded twice, as
an old decoder reads overlong UTF-8, under Unicode compatibility, as IIS ignores case and
trailing dots)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.caddy import running_caddy
from tests.support.databases import migrate
from tests.support.gateway import PASSWORDS, SECRET, csrf_from, seed_users
from tests.support.nginx import running_nginx
from tests.support.servers import free_port, serve_in_thread
from tests.support.traefik import running_traefik
from twofa.config import Settings, load_settings
from twofa.web.app import create_app
from twofa.web.context import SESSION_COOKIE
from twofa.web.reverse_proxy import ReverseProxy

AUTH, APP = "auth.example.test", "app.example.test"
BUILT_IN = "built-in"
PROXIES: dict[str, Callable[..., AbstractContextManager[Any]]] = {
    "nginx": running_nginx,
    "caddy": running_caddy,
    "traefik": running_traefik,
}


@dataclass(frozen=True)
class Reached:
    """The application got the request; `path` is what the built-in proxy (and Traefik)
    sends: the normal form. nginx and Caddy pass the path on as it came (see `expected`)."""

    path: str


REFUSED, SIGN_IN, DENIED = "400", "sign-in", "403"
Outcome = Reached | str


@dataclass(frozen=True)
class Trick:
    attack: str
    path: bytes
    anonymous: Outcome
    bob: Outcome
    # Dot- or empty segments: nginx, Caddy and Traefik pass the path on unresolved, which an
    # application may resolve otherwise, so twofa refuses it there; the built-in proxy sends
    # the resolved form, with the outcomes above.
    resolved: bool = False


def reached(path: str) -> Reached:
    return Reached(path)


TRICKS = [
    Trick("plain-public-page", b"/public/x", reached("/public/x"), reached("/public/x")),
    Trick("plain-admin-page", b"/admin/x", DENIED, DENIED),
    Trick("dot-dot-from-public-into-private", b"/public/../private/x", SIGN_IN, SIGN_IN, True),
    Trick("encoded-dot-dot-lower", b"/public/%2e%2e/private/x", SIGN_IN, SIGN_IN, True),
    Trick("encoded-dot-dot-upper-into-admin", b"/public/%2E%2E/admin/x", DENIED, DENIED, True),
    Trick("half-encoded-dot-dot", b"/public/.%2e/admin/x", DENIED, DENIED, True),
    Trick("dot-segment-before-admin", b"/./admin/x", DENIED, DENIED, True),
    Trick("encoded-dot-segment-before-admin", b"/%2e/admin/x", DENIED, DENIED, True),
    Trick("double-slash-before-admin", b"//admin/x", DENIED, DENIED, True),
    Trick(
        "double-slash-inside-public",
        b"/public//x",
        reached("/public/x"),
        reached("/public/x"),
        True,
    ),
    Trick(
        "double-slash-read-as-a-host",
        b"//public/admin/x",
        reached("/public/admin/x"),
        reached("/public/admin/x"),
        True,
    ),
    Trick(
        "admin-dot-dot-back-into-public",
        b"/admin/../public/x",
        reached("/public/x"),
        reached("/public/x"),
        True,
    ),
    Trick("dot-dot-above-the-root", b"/../admin/x", REFUSED, REFUSED),
    Trick("encoded-slash-lower", b"/public/..%2fadmin/x", REFUSED, REFUSED),
    Trick("encoded-slash-upper", b"/public%2F..%2Fadmin/x", REFUSED, REFUSED),
    Trick("raw-backslash", b"/public/..\\admin/x", REFUSED, REFUSED),
    Trick("encoded-backslash-upper", b"/public/..%5Cadmin/x", REFUSED, REFUSED),
    Trick("encoded-backslash-lower", b"/public/..%5cadmin/x", REFUSED, REFUSED),
    Trick("encoded-nul-before-dot-dot", b"/public/%00/../admin/x", REFUSED, REFUSED),
    Trick("encoded-nul-suffix", b"/public/x%00.css", REFUSED, REFUSED),
    Trick("jsessionid-parameter", b"/admin;jsessionid=0123/x", REFUSED, REFUSED),
    Trick("tomcat-dot-dot-semicolon", b"/public/..;/admin/x", REFUSED, REFUSED),
    Trick("parameter-on-the-bypass-segment", b"/public;x=1/../private/x", REFUSED, REFUSED),
    Trick("encoded-semicolon", b"/public/..%3B/admin/x", REFUSED, REFUSED),
    Trick("upper-case-admin", b"/ADMIN/x", DENIED, DENIED),
    Trick("mixed-case-private", b"/Private/x", SIGN_IN, SIGN_IN),
    Trick("upper-case-public-widening-the-bypass", b"/PUBLIC/x", SIGN_IN, reached("/PUBLIC/x")),
    Trick("trailing-dot-on-admin", b"/admin./x", DENIED, DENIED),
    Trick("encoded-trailing-dot-on-admin", b"/admin%2e/x", DENIED, DENIED),
    Trick("trailing-space-on-admin", b"/admin%20/x", DENIED, DENIED),
    Trick("trailing-dot-widening-the-bypass", b"/public./x", SIGN_IN, reached("/public./x")),
    Trick("encoded-letters-spelling-admin", b"/%61dmin/x", DENIED, DENIED),
    Trick("encoded-capitals-spelling-admin", b"/%41DMIN/x", DENIED, DENIED),
    Trick(
        "encoded-tilde-is-only-a-tilde",
        b"/public/%7euser",
        reached("/public/~user"),
        reached("/public/~user"),
    ),
    Trick("overlong-utf8-dots", b"/public/%c0%ae%c0%ae/admin/x", REFUSED, REFUSED),
    Trick("overlong-utf8-slash", b"/public/..%c0%afadmin/x", REFUSED, REFUSED),
    Trick("fullwidth-solidus", b"/public/..%EF%BC%8Fadmin/x", REFUSED, REFUSED),
    Trick("fullwidth-dots", b"/public/%EF%BC%8E%EF%BC%8E/admin/x", REFUSED, REFUSED),
    Trick("double-encoded-dots", b"/public/%252e%252e/admin/x", REFUSED, REFUSED),
    Trick("double-encoded-slash", b"/public/..%252fadmin/x", REFUSED, REFUSED),
    Trick("iis-unicode-escape", b"/public/%u002e%u002e/admin/x", REFUSED, REFUSED),
    Trick("latin1-byte-not-utf8", b"/public/caf%E9", REFUSED, REFUSED),
    Trick(
        "utf8-is-only-text",
        b"/public/caf%c3%a9",
        reached("/public/caf%C3%A9"),
        reached("/public/caf%C3%A9"),
    ),
    Trick(
        "dot-dot-hidden-in-the-query",
        b"/public/x?/../../admin/x",
        reached("/public/x"),
        reached("/public/x"),
    ),
]


class EchoingApp:
    """The protected application: answers every request with what reached it, and keeps it."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []  # (raw path, Remote-User)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        user = dict(scope["headers"]).get(b"remote-user", b"").decode()
        self.received.append((scope["raw_path"], user))
        body = json.dumps({"path": scope["raw_path"].decode("latin-1"), "user": user}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Site:
    proxy: str
    port: int
    app: EchoingApp
    bob_cookie: str


def site_settings(database_url: str, port: int) -> Settings:
    rules = [
        {"domain": APP, "resources": ["/public/*"], "policy": "bypass"},
        {"domain": APP, "resources": ["/admin/*"], "policy": "deny"},
        {"domain": APP, "resources": ["/private/*"], "policy": "two_factor"},
        {"domain": APP, "policy": "one_factor"},
    ]
    return load_settings(
        environ={},
        mode="dev",
        secret_key=SECRET,
        database_url=database_url,
        public_url=f"http://{AUTH}:{port}",
        access={"domains": [APP], "cookie_domain": "example.test", "rules": rules},
    )


async def prepared_database(settings: Settings) -> None:
    await migrate(settings.database_url)
    await seed_users(settings)


class Loopback(httpx.BaseTransport):
    """Every host name to 127.0.0.1, the Host header keeping the name (for bob's sign-in)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        loopback = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(loopback)


def signed_in_bob(port: int) -> str:
    with httpx.Client(transport=Loopback(), timeout=10) as browser:
        page = browser.get(f"http://{AUTH}:{port}/login")
        answer = browser.post(
            f"http://{AUTH}:{port}/login",
            data={
                "username": "bob",
                "password": PASSWORDS["bob"],
                "csrf_token": csrf_from(page.text),
            },
        )
        assert answer.status_code == 303, answer.text
        token = browser.cookies.get(SESSION_COOKIE)
    assert token
    return token


class World:
    """One database, gateway and echoing application for every trick, in front of them the
    built-in proxy, and nginx, Caddy and Traefik, each started when its first trick comes (a
    proxy that is not installed skips only its own tricks). Starting them is most of the
    time these tests take, so they are started once per worker."""

    def __init__(self, home: Path, running: ExitStack) -> None:
        self.home = home
        self._running = running
        self.ports: dict[str, int] = {BUILT_IN: free_port()}
        settings = site_settings(f"sqlite+aiosqlite:///{home / 'twofa.db'}", self.ports[BUILT_IN])
        asyncio.run(prepared_database(settings))
        self.app = EchoingApp()
        self._app_url = running.enter_context(serve_in_thread(self.app))
        self._twofa_url = running.enter_context(serve_in_thread(create_app(settings)))
        proxy = ReverseProxy(create_app(settings), self._app_url)
        running.enter_context(serve_in_thread(proxy, port=self.ports[BUILT_IN]))
        self.bob_cookie = signed_in_bob(self.ports[BUILT_IN])

    def port_of(self, proxy: str) -> int:
        if proxy not in self.ports:
            port = free_port()
            self._running.enter_context(
                PROXIES[proxy](
                    self.home / proxy,
                    port,
                    self._twofa_url.removeprefix("http://"),
                    self._app_url.removeprefix("http://"),
                    AUTH,
                    APP,
                )
            )
            self.ports[proxy] = port
        return self.ports[proxy]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with ExitStack() as running:
        yield World(tmp_path_factory.mktemp("path-tricks"), running)


@pytest.fixture(params=[BUILT_IN, *PROXIES])
def site(request: pytest.FixtureRequest, world: World) -> Site:
    return Site(request.param, world.port_of(request.param), world.app, world.bob_cookie)


@dataclass(frozen=True)
class Answer:
    status: int
    location: str
    received: list[tuple[bytes, str]]


def send_raw(site: Site, target: bytes, cookie: str = "") -> Answer:
    """One request with exactly this request target, over a socket of its own."""
    site.app.received.clear()
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + f"{APP}:{site.port}".encode() + b"\r\n"
    if cookie:
        head += f"Cookie: {SESSION_COOKIE}={cookie}\r\n".encode()
    head += b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as connection:
        connection.sendall(head)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    headers = rest.partition(b"\r\n\r\n")[0].decode("latin-1")
    location = re.search(r"(?im)^location:\s*(\S+)", headers)
    return Answer(
        int(status_line.split()[1]), location[1] if location else "", list(site.app.received)
    )


def _decoded(raw: bytes) -> str:
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "replace")


def _resolved(path: str) -> str:
    """Tomcat's way: `\\` as `/`, empty segments merged, then dot-segments resolved."""
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


_OVERLONG = {b"%c0%ae": b".", b"%c0%af": b"/", b"%e0%80%ae": b"."}


def readings(raw: bytes) -> set[str]:
    """What an application may take a received path for (see the module's docstring)."""
    bare = re.sub(rb";[^/]*", b"", raw)  # Tomcat drops path parameters before decoding
    old_decoder = bare
    for overlong, char in _OVERLONG.items():
        old_decoder = re.sub(re.escape(overlong), char, old_decoder, flags=re.IGNORECASE)
    tomcat = _resolved(_decoded(bare))
    return {
        _decoded(raw),
        tomcat,
        _resolved(_decoded(urllib.parse.unquote_to_bytes(bare))),
        _resolved(_decoded(old_decoder)),
        _resolved(unicodedata.normalize("NFKC", _decoded(bare))),
        "/".join(segment.rstrip(". ") for segment in tomcat.lower().split("/")),
    }


def allowed(path: bytes, user: str) -> bool:
    """The rules, for the identity the application was told: anonymous only under /public/
    (exactly: a case-sensitive application has no /PUBLIC/), bob anywhere but /admin/ and
    /private/ (in any case: a case-insensitive application has them under /ADMIN/ too)."""
    seen = readings(path)
    if not user:
        return all(reading.startswith("/public/") for reading in seen)
    forbidden = ("/admin/", "/private/")
    return user == "bob" and not any(reading.lower().startswith(forbidden) for reading in seen)


def outcome_of(answer: Answer) -> Outcome:
    if answer.received:
        [(path, _)] = answer.received
        return Reached(path.decode("latin-1"))
    if answer.status == 302 and answer.location.startswith(f"http://{AUTH}:"):
        return SIGN_IN
    return {400: REFUSED, 403: DENIED}.get(answer.status, f"unexpected {answer.status}")


# nginx and Caddy pass the path on as it came; Traefik, like the built-in proxy, sends (and
# asks twofa about) its own normal form, and resolves a few tricks before twofa sees them.
PASSED_ON_AS_SENT = frozenset({"nginx", "caddy"})
RESOLVED_BY_TRAEFIK: dict[str, Outcome] = {
    "dot-dot-above-the-root": DENIED,  # `/admin/x`
    "encoded-nul-before-dot-dot": Reached("/public/admin/x"),  # the %00 segment resolved away
    "parameter-on-the-bypass-segment": SIGN_IN,  # `/private/x`
}


def expected(site: Site, trick: Trick, outcome: Outcome) -> Outcome:
    if site.proxy in PASSED_ON_AS_SENT:
        if trick.resolved:
            return REFUSED
        if isinstance(outcome, Reached):  # as it came, the query left out
            return Reached(trick.path.decode("latin-1").split("?")[0])
    if site.proxy == "traefik":
        return RESOLVED_BY_TRAEFIK.get(trick.attack, outcome)
    return outcome


@pytest.mark.parametrize("trick", TRICKS, ids=[trick.attack for trick in TRICKS])
def test_a_path_trick_reaches_only_what_the_rules_allow(site: Site, trick: Trick) -> None:
    for identity, cookie, wanted in (
        ("anonymous", "", trick.anonymous),
        ("bob", site.bob_cookie, trick.bob),
    ):
        answer = send_raw(site, trick.path, cookie)
        for path, user in answer.received:
            assert allowed(path, user), f"{identity}: the app got {path!r} for {user or 'nobody'}"
        assert outcome_of(answer) == expected(site, trick, wanted), identity


def test_the_table_holds_at_least_thirty_tricks() -> None:
    assert len({trick.attack for trick in TRICKS}) == len(TRICKS) >= 30

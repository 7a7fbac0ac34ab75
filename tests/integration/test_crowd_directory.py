"""CrowdDirectory over real HTTP against the Crowd stand-in on loopback, and the stand-in
itself against the documented shapes of Crowd's usermanagement REST API."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from tests.support.crowd_standin import CrowdStandIn
from tests.support.servers import free_port, serve_in_thread
from twofa.directories.base import DirectoryUnavailable, DirectoryUser
from twofa.directories.crowd import CrowdDirectory, CrowdSettings, make_crowd_http_client

APP_NAME = "twofa-gateway"
APP_PASSWORD = "app-Password-42"
PASSWORD = "correct horse battery"
CONTEXT = "/crowd"
API = f"{CONTEXT}/rest/usermanagement/1"
PAGE_SIZE = 3
ALICE_GROUPS = (
    "engineering",
    "everyone",
    "platform",
    "project-1",
    "project-2",
    "project-3",
    "project-4",
    "project-5",
)  # 8 groups: three pages of 3


@dataclass(frozen=True)
class RunningCrowd:
    standin: CrowdStandIn
    base_url: str  # with Crowd's context path

    def settings(self, **overrides: Any) -> CrowdSettings:
        values: dict[str, Any] = {
            "url": self.base_url,
            "application_name": APP_NAME,
            "application_password": APP_PASSWORD,
            "timeout_s": 5.0,
        }
        return CrowdSettings(**(values | overrides))

    def requests_to(self, resource: str) -> list[dict[str, str]]:
        return [r.query for r in self.standin.received if r.path == f"{API}{resource}"]


@pytest.fixture(scope="module")
def crowd_server() -> Iterator[RunningCrowd]:
    standin = CrowdStandIn(
        application_name=APP_NAME, application_password=APP_PASSWORD, context_path=CONTEXT
    )
    with serve_in_thread(standin.app) as origin:
        yield RunningCrowd(standin, origin + CONTEXT)


@pytest.fixture
def crowd(crowd_server: RunningCrowd) -> Iterator[RunningCrowd]:
    """The shared stand-in with a fresh directory: platform ⊂ engineering ⊂ everyone."""
    standin = crowd_server.standin
    standin.reset()
    standin.add_group("engineering", member_of=("everyone",))
    standin.add_group("platform", member_of=("engineering",))
    standin.add_user(
        "alice",
        PASSWORD,
        display_name="Alice Example",
        email="alice@example.test",
        groups=("platform", *(f"project-{n}" for n in range(1, 6))),
    )
    standin.add_user("bob", PASSWORD, active=False, groups=("everyone",))
    yield crowd_server
    standin.reset_hooks()  # releases a request a slow test left stalled


@asynccontextmanager
async def directory_for(settings: CrowdSettings) -> AsyncIterator[CrowdDirectory]:
    async with make_crowd_http_client(settings) as http:
        yield CrowdDirectory(settings, http, group_page_size=PAGE_SIZE)


@pytest.fixture
async def directory(crowd: RunningCrowd) -> AsyncIterator[CrowdDirectory]:
    async with directory_for(crowd.settings()) as made:
        yield made


# --- the directory over HTTP ---------------------------------------------------------------


async def test_right_password_gives_the_user_with_nested_groups_over_pages(
    crowd: RunningCrowd, directory: CrowdDirectory
) -> None:
    user = await directory.authenticate("alice", PASSWORD)

    assert user == DirectoryUser(
        username="alice",
        display_name="Alice Example",
        email="alice@example.test",
        groups=ALICE_GROUPS,
    )
    pages = [(q["start-index"], q["max-results"]) for q in crowd.requests_to("/user/group/nested")]
    assert pages == [("0", "3"), ("3", "3"), ("6", "3")]


async def test_user_comes_back_in_crowds_spelling(directory: CrowdDirectory) -> None:
    user = await directory.authenticate("ALICE", PASSWORD)
    assert user is not None
    assert user.username == "alice"


async def test_wrong_password_is_refused(directory: CrowdDirectory) -> None:
    assert await directory.authenticate("alice", "wrong password") is None


async def test_unknown_user_is_refused(directory: CrowdDirectory) -> None:
    assert await directory.authenticate("mallory", PASSWORD) is None


async def test_inactive_user_is_refused_even_with_the_right_password(
    directory: CrowdDirectory,
) -> None:
    assert await directory.authenticate("bob", PASSWORD) is None


async def test_empty_password_is_refused_without_asking_crowd(
    crowd: RunningCrowd, directory: CrowdDirectory
) -> None:
    assert await directory.authenticate("alice", "") is None
    assert crowd.standin.received == []


async def test_wrong_application_password_makes_crowd_unavailable(crowd: RunningCrowd) -> None:
    async with directory_for(crowd.settings(application_password="not-it")) as directory:
        with pytest.raises(DirectoryUnavailable, match="application credentials") as raised:
            await directory.authenticate("alice", PASSWORD)
        assert PASSWORD not in str(raised.value)
        assert "not-it" not in str(raised.value)


async def test_crowd_answering_500_makes_crowd_unavailable(
    crowd: RunningCrowd, directory: CrowdDirectory
) -> None:
    crowd.standin.fail_with(500)
    with pytest.raises(DirectoryUnavailable, match="HTTP 500"):
        await directory.authenticate("alice", PASSWORD)
    with pytest.raises(DirectoryUnavailable, match="HTTP 500"):
        await directory.groups_of("alice")


async def test_stopped_crowd_makes_crowd_unavailable() -> None:
    standin = CrowdStandIn(application_name=APP_NAME, application_password=APP_PASSWORD)
    with serve_in_thread(standin.app) as origin:
        pass  # stopped: its port now refuses connections
    settings = CrowdSettings(
        url=origin, application_name=APP_NAME, application_password=SecretStr(APP_PASSWORD)
    )
    async with directory_for(settings) as directory:
        with pytest.raises(DirectoryUnavailable, match="cannot connect"):
            await directory.authenticate("alice", PASSWORD)


async def test_crowd_slower_than_the_timeout_makes_crowd_unavailable(
    crowd: RunningCrowd,
) -> None:
    crowd.standin.slow_down(60)
    async with directory_for(crowd.settings(timeout_s=0.3)) as directory:
        with pytest.raises(DirectoryUnavailable, match=r"did not answer within 0\.3 s"):
            await directory.authenticate("alice", PASSWORD)
    assert len(crowd.requests_to("/authentication")) == 1  # it was asked, and kept us waiting


@pytest.mark.parametrize("username", ["a&b=c", "../x", "x y+z%2F", "#frag?q=1", "Zoë/ü"])
async def test_username_with_special_characters_reaches_crowd_verbatim(
    crowd: RunningCrowd, directory: CrowdDirectory, username: str
) -> None:
    crowd.standin.add_user(username, PASSWORD, groups=("everyone",))

    user = await directory.authenticate(username, PASSWORD)

    assert user is not None
    assert (user.username, user.groups) == (username, ("everyone",))
    assert [r.path for r in crowd.standin.received] == [
        f"{API}/authentication",
        f"{API}/user/group/nested",
    ]
    assert crowd.requests_to("/authentication") == [{"username": username}]


async def test_groups_of_a_known_user_includes_nested_groups(directory: CrowdDirectory) -> None:
    assert await directory.groups_of("alice") == ALICE_GROUPS


async def test_groups_of_an_unknown_user_is_none(directory: CrowdDirectory) -> None:
    assert await directory.groups_of("mallory") is None


async def test_url_without_the_context_path_makes_crowd_unavailable(crowd: RunningCrowd) -> None:
    origin = crowd.base_url.removesuffix(CONTEXT)
    async with directory_for(crowd.settings(url=origin)) as directory:
        with pytest.raises(DirectoryUnavailable, match="not found"):
            await directory.authenticate("alice", PASSWORD)
        with pytest.raises(DirectoryUnavailable, match="not found"):
            await directory.groups_of("alice")


# --- TLS -----------------------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost that no CA vouches for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def answer_wrong_password(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = json.dumps({"reason": "INVALID_USER_AUTHENTICATION", "message": "no"}).encode()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = dict(
            line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line
        )
        await reader.readexactly(int(headers.get(b"content-length", b"0")))
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # the client hung up during the handshake, as it should when verifying
    finally:
        writer.close()


async def test_self_signed_crowd_is_refused_unless_tls_checks_are_off(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    server = await asyncio.start_server(answer_wrong_password, "127.0.0.1", port, ssl=context)
    url = f"https://localhost:{port}/crowd"
    try:
        checked = CrowdSettings(
            url=url, application_name=APP_NAME, application_password=SecretStr("x")
        )
        async with directory_for(checked) as directory:
            with pytest.raises(DirectoryUnavailable, match=r"(?i)certificate"):
                await directory.authenticate("alice", PASSWORD)
        unchecked = checked.model_copy(update={"verify_tls": False})
        async with directory_for(unchecked) as directory:
            assert await directory.authenticate("alice", PASSWORD) is None  # Crowd said no
    finally:
        server.close()
        await server.wait_closed()


# --- the stand-in against the documented shapes --------------------------------------------

ERROR_KEYS = {"reason", "message"}


@pytest.fixture
def raw(crowd: RunningCrowd) -> Iterator[httpx.Client]:
    """Plain HTTP to the stand-in, with the application credentials and JSON asked for."""
    with httpx.Client(
        base_url=crowd.base_url + "/rest/usermanagement/1",
        auth=(APP_NAME, APP_PASSWORD),
        headers={"Accept": "application/json"},
        timeout=5,
    ) as client:
        yield client


def authenticate(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post("/authentication", params={"username": username}, json={"value": password})


def test_standin_answers_a_right_password_with_a_user_entity(raw: httpx.Client) -> None:
    response = authenticate(raw, "alice", PASSWORD)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    user = response.json()
    assert {"name", "display-name", "first-name", "last-name", "email", "active", "key"} <= set(
        user
    )
    assert (user["name"], user["display-name"], user["email"], user["active"]) == (
        "alice",
        "Alice Example",
        "alice@example.test",
        True,
    )
    assert user["link"]["rel"] == "self"
    assert user["link"]["href"].endswith(f"{API}/user?username=alice")


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice", "wrong", "INVALID_USER_AUTHENTICATION"),
        ("mallory", PASSWORD, "USER_NOT_FOUND"),
        ("bob", PASSWORD, "INACTIVE_ACCOUNT"),
        ("bob", "wrong", "INVALID_USER_AUTHENTICATION"),  # Crowd checks the password first
    ],
)
def test_standin_refuses_with_an_error_entity(
    raw: httpx.Client, username: str, password: str, reason: str
) -> None:
    response = authenticate(raw, username, password)
    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["reason"] == reason


@pytest.mark.parametrize("credentials", [None, (APP_NAME, "wrong"), ("other-app", APP_PASSWORD)])
def test_standin_refuses_wrong_application_credentials(
    crowd: RunningCrowd, credentials: tuple[str, str] | None
) -> None:
    with httpx.Client(base_url=crowd.base_url, headers={"Accept": "application/json"}) as client:
        password_check = client.post(
            "/rest/usermanagement/1/authentication",
            params={"username": "alice"},
            json={"value": PASSWORD},
            auth=credentials or httpx.USE_CLIENT_DEFAULT,
        )
        group_lookup = client.get(
            "/rest/usermanagement/1/user/group/nested",
            params={"username": "alice"},
            auth=credentials or httpx.USE_CLIENT_DEFAULT,
        )
    for response in (password_check, group_lookup):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].lower().startswith("basic")


def test_standin_lists_nested_groups_in_pages(raw: httpx.Client) -> None:
    def page(start: int, size: int) -> list[str]:
        response = raw.get(
            "/user/group/nested",
            params={"username": "alice", "start-index": start, "max-results": size},
        )
        assert response.status_code == 200
        return [group["name"] for group in response.json()["groups"]]

    everything = raw.get("/user/group/nested", params={"username": "alice"}).json()
    assert [g["name"] for g in everything["groups"]] == list(ALICE_GROUPS)
    assert all(set(g) == {"link", "name"} for g in everything["groups"])
    assert page(0, 3) + page(3, 3) + page(6, 3) == list(ALICE_GROUPS)
    assert page(8, 3) == []


def test_standin_answers_404_for_the_groups_of_an_unknown_user(raw: httpx.Client) -> None:
    response = raw.get("/user/group/nested", params={"username": "mallory"})
    assert response.status_code == 404
    assert set(response.json()) == ERROR_KEYS
    assert response.json()["reason"] == "USER_NOT_FOUND"


def test_standin_nesting_follows_groups_added_later(crowd: RunningCrowd, raw: httpx.Client) -> None:
    crowd.standin.add_group("everyone", member_of=("all-staff",))
    response = raw.get("/user/group/nested", params={"username": "bob"})
    assert [g["name"] for g in response.json()["groups"]] == ["all-staff", "everyone"]


def test_standin_insists_on_json(raw: httpx.Client) -> None:
    response = raw.post(
        "/authentication",
        params={"username": "alice"},
        json={"value": PASSWORD},
        headers={"Accept": "application/xml"},
    )
    assert response.status_code == 406

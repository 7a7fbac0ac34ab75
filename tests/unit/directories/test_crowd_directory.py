"""CrowdDirectory against scripted Crowd answers (httpx.MockTransport): request shape, the
answers that mean no, and every answer that must become DirectoryUnavailable."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from twofa.directories.base import DirectoryUnavailable, DirectoryUser
from twofa.directories.crowd import (
    CrowdDirectory,
    CrowdSettings,
    make_crowd_http_client,
)

PASSWORD = "s3cret-Password!"
APP_PASSWORD = "app-Password-42"
BASE = "https://crowd.example.test/crowd"
AUTH_URL = f"{BASE}/rest/usermanagement/1/authentication"
GROUPS_URL = f"{BASE}/rest/usermanagement/1/user/group/nested"

Handler = Callable[[httpx.Request], httpx.Response]
MakeDirectory = Callable[..., CrowdDirectory]


def settings(**overrides: Any) -> CrowdSettings:
    values: dict[str, Any] = {
        "url": BASE,
        "application_name": "twofa",
        "application_password": APP_PASSWORD,
        "timeout_s": 2.5,
    }
    return CrowdSettings(**(values | overrides))


def crowd_error(status: int, reason: str, message: str = "Crowd says no") -> httpx.Response:
    return httpx.Response(status, json={"reason": reason, "message": message})


def user_entity(name: object = "alice", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "display-name": "Alice Example",
        "email": "alice@example.test",
        "active": True,
        **fields,
    }


def groups_page(*names: str) -> httpx.Response:
    return httpx.Response(200, json={"expand": "group", "groups": [{"name": n} for n in names]})


def crowd(
    auth: httpx.Response | None = None, groups: Handler | httpx.Response | None = None
) -> Handler:
    """A scripted Crowd: `auth` answers the password check, `groups` the group lookup."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/authentication") and auth is not None:
            return auth
        if request.url.path.endswith("/user/group/nested") and groups is not None:
            return groups(request) if callable(groups) else groups
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    return handle


@pytest.fixture
async def make_directory() -> AsyncIterator[MakeDirectory]:
    async with AsyncExitStack() as clients:

        def make(handler: Handler, **options: Any) -> CrowdDirectory:
            page_size = options.pop("group_page_size", 100)
            http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
            clients.push_async_callback(http.aclose)
            return CrowdDirectory(settings(**options), http, group_page_size=page_size)

        yield make


# --- settings ------------------------------------------------------------------------------


def test_settings_keep_the_context_path_and_drop_a_trailing_slash() -> None:
    assert settings(url=" https://crowd.example.test/crowd/ ").url == BASE
    assert settings(url="https://jira.example.test").url == "https://jira.example.test"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8095/crowd", "http://localhost:8095", "http://[::1]:8095"]
)
def test_plain_http_is_accepted_to_this_machine(url: str) -> None:
    assert settings(url=url).url == url


def test_plain_http_to_another_host_is_refused() -> None:
    with pytest.raises(ValidationError, match="clear text"):
        settings(url="http://crowd.example.test/crowd")


def test_plain_http_to_another_host_is_accepted_when_explicitly_allowed() -> None:
    allowed = settings(url="http://crowd.example.test/crowd", allow_insecure_http=True)
    assert allowed.url == "http://crowd.example.test/crowd"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://crowd.example.test",
        "crowd.example.test",
        "https://",
        "https://crowd.example.test/crowd?x=1",
        "https://crowd.example.test/#top",
        "https://app:pw@crowd.example.test",
        "https://crowd.example.test:99999",
    ],
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError):
        settings(url=url)


@pytest.mark.parametrize(
    "overrides",
    [
        {"application_name": ""},
        {"application_password": ""},
        {"timeout_s": 0},
        {"unknown_key": 1},
    ],
)
def test_incomplete_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**overrides)


def test_settings_never_show_the_application_password() -> None:
    assert APP_PASSWORD not in repr(settings())
    assert APP_PASSWORD not in str(settings().model_dump())


def test_verify_tls_is_on_unless_switched_off() -> None:
    assert settings().verify_tls is True


async def test_made_http_client_does_not_follow_redirects_and_has_the_timeout() -> None:
    async with make_crowd_http_client(settings(timeout_s=3)) as http:
        assert http.follow_redirects is False
        assert http.timeout == httpx.Timeout(3)


async def test_group_page_size_must_be_positive() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError, match="group_page_size"):
            CrowdDirectory(settings(), http, group_page_size=0)


# --- the request ---------------------------------------------------------------------------


async def test_password_check_is_the_documented_request(make_directory: MakeDirectory) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/authentication"):
            return httpx.Response(200, json=user_entity())
        return groups_page()

    await make_directory(handle).authenticate("alice", PASSWORD)

    check = seen[0]
    assert check.method == "POST"
    assert check.url.copy_with(query=None) == httpx.URL(AUTH_URL)
    assert dict(check.url.params) == {"username": "alice"}
    assert json.loads(check.content) == {"value": PASSWORD}
    assert check.headers["content-type"] == "application/json"
    assert check.headers["accept"] == "application/json"
    expected_credentials = base64.b64encode(f"twofa:{APP_PASSWORD}".encode()).decode()
    assert check.headers["authorization"] == f"Basic {expected_credentials}"
    assert check.extensions["timeout"] == httpx.Timeout(2.5).as_dict()


@pytest.mark.parametrize("username", ["a&b=c", "../x", "x y+z%2F", "#frag?q", "Zoë/ü"])
async def test_username_cannot_change_the_request(
    make_directory: MakeDirectory, username: str
) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return crowd_error(400, "USER_NOT_FOUND")

    await make_directory(handle).authenticate(username, PASSWORD)
    assert seen[0].url.path == "/crowd/rest/usermanagement/1/authentication"
    assert list(seen[0].url.params.multi_items()) == [("username", username)]


@pytest.mark.parametrize(("username", "password"), [("alice", ""), ("", PASSWORD)])
async def test_empty_credentials_are_refused_without_asking_crowd(
    make_directory: MakeDirectory, username: str, password: str
) -> None:
    directory = make_directory(crowd())  # any request would fail the test
    assert await directory.authenticate(username, password) is None


async def test_groups_of_an_empty_name_is_none_without_asking_crowd(
    make_directory: MakeDirectory,
) -> None:
    assert await make_directory(crowd()).groups_of("") is None


# --- yes and no ----------------------------------------------------------------------------


async def test_right_password_gives_crowds_user_with_nested_groups(
    make_directory: MakeDirectory,
) -> None:
    answer = httpx.Response(200, json=user_entity(name="alice"))
    directory = make_directory(crowd(answer, groups_page("jira-users", "engineering")))

    user = await directory.authenticate("ALICE", PASSWORD)

    assert user == DirectoryUser(
        username="alice",
        display_name="Alice Example",
        email="alice@example.test",
        groups=("engineering", "jira-users"),
    )


async def test_groups_are_asked_for_under_crowds_spelling_of_the_name(
    make_directory: MakeDirectory,
) -> None:
    asked: list[str | None] = []

    def groups(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params.get("username"))
        return groups_page()

    directory = make_directory(crowd(httpx.Response(200, json=user_entity(name="alice")), groups))
    await directory.authenticate("ALICE", PASSWORD)
    assert asked == ["alice"]


async def test_missing_display_name_and_email_fall_back(make_directory: MakeDirectory) -> None:
    answer = httpx.Response(200, json={"name": "bob", "active": True})
    user = await make_directory(crowd(answer, groups_page())).authenticate("bob", PASSWORD)
    assert user == DirectoryUser(username="bob", display_name="bob", email="", groups=())


@pytest.mark.parametrize(
    "refusal",
    [
        crowd_error(400, "INVALID_USER_AUTHENTICATION"),
        crowd_error(400, "USER_NOT_FOUND"),
        crowd_error(400, "INACTIVE_ACCOUNT"),
        crowd_error(400, "EXPIRED_CREDENTIAL"),
        crowd_error(403, "APPLICATION_ACCESS_DENIED"),
        httpx.Response(200, json=user_entity(active=False)),
    ],
    ids=["wrong-password", "unknown", "inactive", "expired", "no-access-to-app", "active-false"],
)
async def test_crowds_refusals_are_a_no(
    make_directory: MakeDirectory, refusal: httpx.Response
) -> None:
    assert await make_directory(crowd(refusal)).authenticate("alice", PASSWORD) is None


async def test_groups_are_read_page_by_page(make_directory: MakeDirectory) -> None:
    everything = [f"group-{n:02}" for n in range(7)]
    pages: list[tuple[str | None, str | None]] = []

    def groups(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start-index"])
        size = int(request.url.params["max-results"])
        pages.append((request.url.params.get("start-index"), request.url.params.get("max-results")))
        return groups_page(*everything[start : start + size])

    directory = make_directory(crowd(groups=groups), group_page_size=3)
    assert await directory.groups_of("alice") == tuple(everything)
    assert pages == [("0", "3"), ("3", "3"), ("6", "3")]


async def test_a_full_last_page_costs_one_empty_page(make_directory: MakeDirectory) -> None:
    answers = iter([groups_page("a", "b"), groups_page()])
    directory = make_directory(crowd(groups=lambda _: next(answers)), group_page_size=2)
    assert await directory.groups_of("alice") == ("a", "b")


async def test_groups_of_an_unknown_user_is_none(make_directory: MakeDirectory) -> None:
    directory = make_directory(crowd(groups=crowd_error(404, "USER_NOT_FOUND")))
    assert await directory.groups_of("nobody") is None


async def test_user_removed_between_password_and_groups_is_a_no(
    make_directory: MakeDirectory,
) -> None:
    handler = crowd(httpx.Response(200, json=user_entity()), crowd_error(404, "USER_NOT_FOUND"))
    assert await make_directory(handler).authenticate("alice", PASSWORD) is None


# --- cannot tell ---------------------------------------------------------------------------

UNAVAILABLE_PASSWORD_CHECKS = {
    "app-refused": (httpx.Response(401, text="Application failed to authenticate"), "credentials"),
    "app-forbidden": (httpx.Response(403, text="Client address is forbidden"), "credentials"),
    "app-lacks-permission": (crowd_error(403, "APPLICATION_PERMISSION_DENIED"), "credentials"),
    "bad-argument": (crowd_error(400, "ILLEGAL_ARGUMENT"), "unexpected"),
    "400-html": (httpx.Response(400, html="<h1>Bad Request</h1>"), "unexpected"),
    "wrong-url": (httpx.Response(404, html="<h1>Not Found</h1>"), "not found"),
    "404-user-not-found": (crowd_error(404, "USER_NOT_FOUND"), "not found"),
    "sso-redirect": (httpx.Response(302, headers={"location": "/login.jsp"}), "redirect"),
    "server-error": (crowd_error(500, "OPERATION_FAILED", "directory down"), "HTTP 500"),
    "proxy-error": (httpx.Response(502, html="<h1>Bad Gateway</h1>"), "HTTP 502"),
    "teapot": (httpx.Response(418, text="?"), "unexpected"),
    "200-html": (httpx.Response(200, html="<html>Log in</html>"), "not JSON"),
    "200-latin1": (httpx.Response(200, content=b"\xff\xfe{"), "not JSON"),
    "200-list": (httpx.Response(200, json=[user_entity()]), "not a JSON object"),
    "200-no-name": (httpx.Response(200, json={"active": True}), "named no user"),
    "200-empty-name": (httpx.Response(200, json=user_entity(name="")), "named no user"),
    "200-name-not-text": (httpx.Response(200, json=user_entity(name=7)), "named no user"),
    "200-odd-active": (httpx.Response(200, json=user_entity(active="false")), "active"),
}


@pytest.mark.parametrize(
    ("answer", "explanation"),
    list(UNAVAILABLE_PASSWORD_CHECKS.values()),
    ids=list(UNAVAILABLE_PASSWORD_CHECKS),
)
async def test_untrustworthy_password_answers_make_crowd_unavailable(
    make_directory: MakeDirectory, answer: httpx.Response, explanation: str
) -> None:
    with pytest.raises(DirectoryUnavailable, match=explanation) as raised:
        await make_directory(crowd(answer)).authenticate("alice", PASSWORD)
    assert PASSWORD not in str(raised.value)
    assert APP_PASSWORD not in str(raised.value)
    assert raised.value.__cause__ is None


UNAVAILABLE_GROUP_LOOKUPS = {
    "app-refused": (httpx.Response(401), "credentials"),
    "404-without-reason": (httpx.Response(404, html="<h1>Not Found</h1>"), "not found"),
    "server-error": (httpx.Response(503), "HTTP 503"),
    "not-json": (httpx.Response(200, text="groups: a, b"), "not JSON"),
    "no-groups-array": (httpx.Response(200, json={"groups": {"name": "a"}}), "'groups' array"),
    "missing-groups": (httpx.Response(200, json={}), "'groups' array"),
    "group-without-name": (httpx.Response(200, json={"groups": [{"x": 1}]}), "without a name"),
    "group-name-not-text": (httpx.Response(200, json={"groups": [{"name": 1}]}), "without a name"),
    "group-not-object": (httpx.Response(200, json={"groups": ["a"]}), "without a name"),
}


@pytest.mark.parametrize(
    ("answer", "explanation"),
    list(UNAVAILABLE_GROUP_LOOKUPS.values()),
    ids=list(UNAVAILABLE_GROUP_LOOKUPS),
)
async def test_untrustworthy_group_answers_make_crowd_unavailable(
    make_directory: MakeDirectory, answer: httpx.Response, explanation: str
) -> None:
    directory = make_directory(crowd(httpx.Response(200, json=user_entity()), answer))
    with pytest.raises(DirectoryUnavailable, match=explanation):
        await directory.authenticate("alice", PASSWORD)
    with pytest.raises(DirectoryUnavailable, match=explanation):
        await directory.groups_of("alice")


async def test_crowd_ignoring_start_index_makes_crowd_unavailable(
    make_directory: MakeDirectory,
) -> None:
    directory = make_directory(crowd(groups=groups_page("a", "b")), group_page_size=2)
    with pytest.raises(DirectoryUnavailable, match="start-index"):
        await directory.groups_of("alice")


async def test_crowd_paging_forever_is_cut_off(make_directory: MakeDirectory) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start-index"])
        return groups_page(*(f"g{start + n}" for n in range(1000)))

    directory = make_directory(crowd(groups=endless), group_page_size=1000)
    with pytest.raises(DirectoryUnavailable, match="more than"):
        await directory.groups_of("alice")


@pytest.mark.parametrize(
    ("failure", "explanation"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "cannot connect.*refused"),
        (httpx.ConnectTimeout("timed out"), "did not answer within 2.5 s"),
        (httpx.ReadTimeout("timed out"), "did not answer within 2.5 s"),
        (httpx.RemoteProtocolError("peer closed connection"), "RemoteProtocolError"),
        (httpx.ReadError("connection reset"), "ReadError"),
    ],
)
async def test_transport_failures_make_crowd_unavailable(
    make_directory: MakeDirectory, failure: httpx.HTTPError, explanation: str
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise failure

    directory = make_directory(handle)
    with pytest.raises(DirectoryUnavailable, match=explanation) as raised:
        await directory.authenticate("alice", PASSWORD)
    assert PASSWORD not in str(raised.value)
    assert raised.value.__cause__ is None  # the httpx error holds the request body
    with pytest.raises(DirectoryUnavailable, match=explanation):
        await directory.groups_of("alice")


async def test_refusals_are_logged_without_the_password(
    make_directory: MakeDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="twofa.directories.crowd")
    directory = make_directory(crowd(crowd_error(400, "INVALID_USER_AUTHENTICATION")))
    await directory.authenticate("alice", PASSWORD)
    assert "INVALID_USER_AUTHENTICATION" in caplog.text
    assert PASSWORD not in caplog.text

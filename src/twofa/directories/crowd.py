"""Atlassian Crowd's REST "user server" (served by Crowd, Jira and Confluence) as an external
directory. twofa signs in as a Crowd application, checks passwords with the authentication
resource and reads nested groups; any answer it cannot trust becomes `DirectoryUnavailable`,
never a yes or a no."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import httpx

from twofa.config.directories import CrowdSettings
from twofa.directories.base import DirectoryUnavailable, DirectoryUser, ExternalDirectory

log = logging.getLogger(__name__)

API_PATH: Final = "/rest/usermanagement/1"
DEFAULT_GROUP_PAGE_SIZE: Final = 500
# A bound on what one user's group list may hold, so a server that pages forever cannot
# exhaust memory; real directories stay far below it.
MAX_GROUPS: Final = 20_000
# Crowd's ErrorEntity reasons that are a definite "this user may not sign in", by status.
# Crowd answers 400 for these on the authentication resource, and 403 when the user exists
# and the password is right but the user is not allowed to use this application.
_REFUSALS: Final[dict[int, frozenset[str]]] = {
    400: frozenset(
        {"INVALID_USER_AUTHENTICATION", "USER_NOT_FOUND", "INACTIVE_ACCOUNT", "EXPIRED_CREDENTIAL"}
    ),
    403: frozenset({"APPLICATION_ACCESS_DENIED"}),
}
_QUOTED_TEXT_LIMIT: Final = 200


def make_crowd_http_client(
    settings: CrowdSettings, *, max_connections: int = 20
) -> httpx.AsyncClient:
    """An HTTP client for Crowd with the admin's TLS choice; redirects are not followed
    because a redirect from the REST API means the URL is wrong (e.g. a login page)."""
    return httpx.AsyncClient(
        verify=settings.verify_tls,
        timeout=httpx.Timeout(settings.timeout_s),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=max_connections),
    )


class CrowdDirectory:
    """Users and nested groups from Crowd's usermanagement REST API, version 1."""

    name = "crowd"

    def __init__(
        self,
        settings: CrowdSettings,
        http: httpx.AsyncClient,
        *,
        group_page_size: int = DEFAULT_GROUP_PAGE_SIZE,
    ) -> None:
        if group_page_size < 1:
            raise ValueError("group_page_size must be at least 1")
        self._settings = settings
        self._http = http
        self._group_page_size = group_page_size
        self._api_url = settings.url + API_PATH
        self._application_auth = httpx.BasicAuth(
            settings.application_name, settings.application_password.get_secret_value()
        )
        self._timeout = httpx.Timeout(settings.timeout_s)

    async def authenticate(self, username: str, password: str) -> DirectoryUser | None:
        # Some directories treat an empty password as an anonymous bind that succeeds;
        # never ask the question.
        if not username or not password:
            return None
        response = await self._send(
            "POST", "/authentication", params={"username": username}, json_body={"value": password}
        )
        if response.status_code != 200:
            reason = _crowd_reason(response)
            if reason in _REFUSALS.get(response.status_code, frozenset()):
                log.info("Crowd refused the sign-in of %r: %s", username, reason)
                return None
            raise self._unexpected(response, "the password check")
        entity = _json_object(response, "the password check")
        canonical_name = entity.get("name")
        if not isinstance(canonical_name, str) or not canonical_name:
            raise DirectoryUnavailable("Crowd accepted the password but named no user")
        active = entity.get("active", True)
        if not isinstance(active, bool):
            raise DirectoryUnavailable(f"Crowd sent an unreadable 'active' flag: {active!r}")
        if not active:
            return None
        groups = await self._nested_groups(canonical_name)
        if groups is None:  # removed in Crowd between the two calls
            return None
        return DirectoryUser(
            username=canonical_name,
            display_name=_text_field(entity, "display-name") or canonical_name,
            email=_text_field(entity, "email"),
            groups=groups,
        )

    async def groups_of(self, username: str) -> tuple[str, ...] | None:
        if not username:
            return None
        return await self._nested_groups(username)

    async def _nested_groups(self, username: str) -> tuple[str, ...] | None:
        found: set[str] = set()
        start_index = 0
        while True:
            response = await self._send(
                "GET",
                "/user/group/nested",
                params={
                    "username": username,
                    "start-index": str(start_index),
                    "max-results": str(self._group_page_size),
                },
            )
            if response.status_code == 404 and _crowd_reason(response) == "USER_NOT_FOUND":
                return None
            if response.status_code != 200:
                raise self._unexpected(response, "the group lookup")
            page = _group_names(_json_object(response, "the group lookup"))
            if page and found.issuperset(page):
                raise DirectoryUnavailable(
                    "Crowd sent the same groups again for a later page; it seems to ignore "
                    "start-index, so the user's groups cannot be known"
                )
            found.update(page)
            if len(found) > MAX_GROUPS:
                raise DirectoryUnavailable(
                    f"Crowd lists more than {MAX_GROUPS} groups for one user"
                )
            if len(page) < self._group_page_size:
                return tuple(sorted(found))
            start_index += len(page)

    async def _send(
        self,
        method: str,
        resource: str,
        *,
        params: dict[str, str],
        json_body: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = self._api_url + resource
        try:
            return await self._http.request(
                method,
                url,
                params=params,
                json=json_body,
                headers={"Accept": "application/json"},
                auth=self._application_auth,
                timeout=self._timeout,
                follow_redirects=False,
            )
        # `from None`: the chained httpx error holds the request, and its body the password.
        except httpx.TimeoutException:
            waited = f"{self._settings.timeout_s:g} s"
            raise DirectoryUnavailable(
                f"Crowd at {self._settings.url} did not answer within {waited}"
            ) from None
        except httpx.ConnectError as exc:
            raise DirectoryUnavailable(
                f"cannot connect to Crowd at {self._settings.url}: {exc}"
            ) from None
        except httpx.HTTPError as exc:
            raise DirectoryUnavailable(
                f"talking to Crowd at {self._settings.url} failed: {type(exc).__name__}: {exc}"
            ) from None

    def _unexpected(self, response: httpx.Response, purpose: str) -> DirectoryUnavailable:
        status = response.status_code
        said = _crowd_said(response)
        if status in (401, 403):
            return DirectoryUnavailable(
                f"Crowd refused twofa's application credentials on {purpose} (HTTP {status}"
                f"{said}); check the application name {self._settings.application_name!r}, "
                "its password and the addresses Crowd allows for it"
            )
        if response.is_redirect:
            location = response.headers.get("location", "")[:_QUOTED_TEXT_LIMIT]
            return DirectoryUnavailable(
                f"Crowd answered {purpose} with a redirect (HTTP {status} to {location!r}); "
                f"check the Crowd URL {self._settings.url!r}"
            )
        if status == 404:
            return DirectoryUnavailable(
                f"Crowd's REST API was not found under {self._settings.url!r} (HTTP 404{said}); "
                "check the Crowd URL and its context path"
            )
        if status >= 500:
            return DirectoryUnavailable(f"Crowd failed on {purpose} (HTTP {status}{said})")
        return DirectoryUnavailable(
            f"Crowd gave an unexpected answer to {purpose} (HTTP {status}{said})"
        )


if TYPE_CHECKING:  # mypy proves the class fits the protocol the login service expects
    _fits_the_protocol: type[ExternalDirectory] = CrowdDirectory


def _json_object(response: httpx.Response, purpose: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:  # also covers bodies that are not valid UTF-8
        content_type = response.headers.get("content-type", "")
        raise DirectoryUnavailable(
            f"Crowd's answer to {purpose} is not JSON (HTTP {response.status_code}, "
            f"Content-Type {content_type!r}); check the Crowd URL"
        ) from None
    if not isinstance(body, dict):
        raise DirectoryUnavailable(f"Crowd's answer to {purpose} is not a JSON object")
    return body


def _crowd_reason(response: httpx.Response) -> str | None:
    """The `reason` of a Crowd ErrorEntity, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


def _crowd_said(response: httpx.Response) -> str:
    """Crowd's own words for an error, for the admin reading the log; empty if none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    words = [str(body[key]) for key in ("reason", "message") if body.get(key)]
    return f": {' '.join(words)[:_QUOTED_TEXT_LIMIT]}" if words else ""


def _group_names(body: dict[str, Any]) -> list[str]:
    groups = body.get("groups")
    if not isinstance(groups, list):
        raise DirectoryUnavailable("Crowd's group list has no 'groups' array")
    names: list[str] = []
    for group in groups:
        name = group.get("name") if isinstance(group, dict) else None
        if not isinstance(name, str) or not name:
            raise DirectoryUnavailable("Crowd's group list holds a group without a name")
        names.append(name)
    return names


def _text_field(entity: dict[str, Any], key: str) -> str:
    value = entity.get(key)
    return value if isinstance(value, str) else ""

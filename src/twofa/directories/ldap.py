"""LDAP and Active Directory as an external directory, through ldap3. twofa binds with a
service account, finds the user with an admin-written filter (the typed username escaped),
checks the password by binding as the user's DN and reads groups from `memberOf` or a group
search. ldap3 blocks, so every question runs in a worker thread under the configured timeouts;
anything it cannot trust becomes `DirectoryUnavailable`, never a yes or a no."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import ldap3
from ldap3.core.exceptions import LDAPException

from twofa.config.directories import LdapSettings
from twofa.directories.base import DirectoryUnavailable, DirectoryUser, ExternalDirectory
from twofa.directories.ldap_filter import (
    DN_PLACEHOLDER,
    USERNAME_PLACEHOLDER,
    LdapEntry,
    canonical_username,
    entries_in,
    fill_filter,
    group_name_from_dn,
)
from twofa.errors import ConfigurationError

log = logging.getLogger(__name__)

# A bound on one user's groups, so a directory with a group loop or a huge tree cannot
# exhaust memory or time; real users stay far below it.
MAX_GROUPS: Final = 5_000
_GROUP_PAGE_SIZE: Final = 500
# How many group DNs one nested-group search asks about at once, in one OR filter.
_DNS_PER_GROUP_SEARCH: Final = 50
_PAGED_RESULTS_OID: Final = "1.2.840.113556.1.4.319"
_SUCCESS: Final = 0
_SIZE_LIMIT_EXCEEDED: Final = 4
_NO_SUCH_OBJECT: Final = 32
# invalidCredentials covers a wrong password everywhere (and AD's disabled, locked and
# expired accounts); unwillingToPerform is how some servers refuse a deactivated account.
_BIND_REFUSALS: Final = frozenset({49, 53})


class LdapDirectory:
    """Users and groups from one LDAP server, asked afresh over a new connection per call."""

    name = "ldap"

    def __init__(self, settings: LdapSettings) -> None:
        self._settings = settings
        # The server's own limit on a search, in whole seconds (0 would mean "no limit").
        self._server_time_limit = max(1, int(settings.timeout_s))
        self._tls_context = _tls_context(settings)

    async def authenticate(self, username: str, password: str) -> DirectoryUser | None:
        # An empty password makes a simple bind "unauthenticated", which many servers
        # answer with success: never ask the question.
        if not username or not password:
            return None
        return await asyncio.to_thread(self._authenticate_blocking, username, password)

    async def groups_of(self, username: str) -> tuple[str, ...] | None:
        if not username:
            return None
        return await asyncio.to_thread(self._groups_of_blocking, username)

    def _authenticate_blocking(self, username: str, password: str) -> DirectoryUser | None:
        with self._service_connection() as connection:
            entry = self._find_user(connection, username)
            if entry is None or not self._password_accepted(entry.dn, password):
                return None
            canonical = canonical_username(
                entry.values(self._settings.username_attribute), username
            )
            if canonical is None:
                raise DirectoryUnavailable(
                    f"the LDAP entry {entry.dn!r} has no {self._settings.username_attribute!r} "
                    "attribute; check username_attribute"
                )
            return DirectoryUser(
                username=canonical,
                display_name=entry.first(self._settings.display_name_attribute) or canonical,
                email=entry.first(self._settings.email_attribute),
                groups=self._groups(connection, entry),
            )

    def _groups_of_blocking(self, username: str) -> tuple[str, ...] | None:
        with self._service_connection() as connection:
            entry = self._find_user(connection, username)
            return None if entry is None else self._groups(connection, entry)

    # --- connections -------------------------------------------------------------------

    @contextmanager
    def _asking(self, step: str) -> Iterator[None]:
        """Turns every failure to talk to the server during `step` into
        `DirectoryUnavailable` naming the server and the step."""
        try:
            yield
        # Not only LDAPException and OSError: on a malformed answer ldap3 and pyasn1 raise
        # whatever their parsing hits, and that is a directory that cannot be asked too.
        except Exception as exc:
            if not isinstance(exc, LDAPException | OSError):
                log.warning("LDAP: unexpected failure during %s", step, exc_info=True)
            raise DirectoryUnavailable(
                f"LDAP server {self._settings.url}: {step} failed: {type(exc).__name__}: {exc}"
            ) from None

    def _open(self, bind_dn: str, password: str, purpose: str) -> ldap3.Connection:
        """An open connection (TLS started if configured), not yet bound."""
        settings = self._settings
        server = ldap3.Server(
            settings.host,
            port=settings.port,
            use_ssl=settings.scheme == "ldaps",
            tls=self._tls(),
            get_info=ldap3.NONE,
            connect_timeout=settings.timeout_s,
        )
        connection = ldap3.Connection(
            server,
            user=bind_dn,
            password=password,
            authentication=ldap3.SIMPLE,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            # Referrals would send our credentials to servers the admin did not name.
            auto_referrals=False,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds: it must be an int.
            receive_timeout=math.ceil(settings.timeout_s),
            raise_exceptions=False,
        )
        try:
            with self._asking(f"connecting for {purpose}"):
                connection.open()
            if settings.start_tls:
                with self._asking(f"StartTLS for {purpose}"):
                    connection.start_tls()
        except DirectoryUnavailable:
            _close(connection)
            raise
        return connection

    def _tls(self) -> ldap3.Tls | None:
        if self._tls_context is None:
            return None
        return _StandardTls(self._tls_context, self._settings.host)

    @contextmanager
    def _service_connection(self) -> Iterator[ldap3.Connection]:
        settings = self._settings
        connection = self._open(
            settings.bind_dn, settings.bind_password.get_secret_value(), "the service account"
        )
        try:
            with self._asking("binding as the service account"):
                bound = connection.bind()
            if not bound:
                raise DirectoryUnavailable(
                    f"LDAP server {settings.url} refused the service account "
                    f"{settings.bind_dn!r} ({_said(connection)}); check bind_dn and "
                    "bind_password"
                )
            yield connection
        finally:
            _close(connection)

    def _password_accepted(self, user_dn: str, password: str) -> bool:
        if not password:  # checked by the caller too: an empty password must never be sent
            return False
        connection = self._open(user_dn, password, "the password check")
        try:
            with self._asking("the password check"):
                bound = connection.bind()
            if bound:
                return True
            if connection.result.get("result") in _BIND_REFUSALS:
                log.info("LDAP refused the password of %r: %s", user_dn, _said(connection))
                return False
            raise DirectoryUnavailable(
                f"LDAP server {self._settings.url} gave an unexpected answer to the password "
                f"check of {user_dn!r} ({_said(connection)})"
            )
        finally:
            _close(connection)

    # --- searches ----------------------------------------------------------------------

    def _find_user(self, connection: ldap3.Connection, username: str) -> LdapEntry | None:
        settings = self._settings
        wanted = [
            settings.username_attribute,
            settings.display_name_attribute,
            settings.email_attribute,
        ]
        if settings.group_source == "member_of":
            wanted.append(settings.group_attribute)
        with self._asking("the user search"):
            connection.search(
                settings.base_dn,
                fill_filter(settings.user_filter, USERNAME_PLACEHOLDER, username),
                search_scope=ldap3.SUBTREE,
                attributes=wanted,
                # Two are enough to know the answer is not one user.
                size_limit=2,
                time_limit=self._server_time_limit,
            )
        code = connection.result.get("result")
        entries = entries_in(connection.response)
        if code == _SIZE_LIMIT_EXCEEDED or len(entries) > 1:
            log.warning(
                "LDAP: the user filter matches more than one entry for %r; refusing the "
                "sign-in (make the filter or the directory unambiguous)",
                username,
            )
            return None
        if code != _SUCCESS:
            raise self._search_failed(connection, f"the user search under {settings.base_dn!r}")
        return entries[0] if entries else None

    def _groups(self, connection: ldap3.Connection, entry: LdapEntry) -> tuple[str, ...]:
        settings = self._settings
        if settings.group_source == "member_of":
            names = self._groups_from_member_of(connection, entry)
        else:
            names = self._groups_from_search(connection, entry.dn)
        return tuple(sorted(names))

    def _groups_from_member_of(self, connection: ldap3.Connection, entry: LdapEntry) -> set[str]:
        attribute = self._settings.group_attribute
        seen: dict[str, str] = {}
        level = _new_dns(entry.values(attribute), seen)
        while level:
            self._check_group_count(seen)
            if not self._settings.nested_groups:
                break
            parents: list[str] = []
            for group_dn in level:
                parents.extend(self._attribute_of(connection, group_dn, attribute))
            level = _new_dns(parents, seen)
        return {name for dn in seen.values() if (name := self._name_of(dn)) is not None}

    def _groups_from_search(self, connection: ldap3.Connection, user_dn: str) -> set[str]:
        settings = self._settings
        names: set[str] = set()
        seen: dict[str, str] = {}
        level = [user_dn]
        while level:
            found: list[str] = []
            for start in range(0, len(level), _DNS_PER_GROUP_SEARCH):
                batch = level[start : start + _DNS_PER_GROUP_SEARCH]
                filters = [fill_filter(settings.group_filter, DN_PLACEHOLDER, dn) for dn in batch]
                query = filters[0] if len(filters) == 1 else "(|" + "".join(filters) + ")"
                for group in self._paged_search(connection, query):
                    found.append(group.dn)
                    name = group.first(settings.group_name_attribute) or self._name_of(group.dn)
                    if name:
                        names.add(name)
            level = _new_dns(found, seen)
            self._check_group_count(seen)
            if not settings.nested_groups:
                break
        return names

    def _paged_search(self, connection: ldap3.Connection, query: str) -> Iterator[LdapEntry]:
        settings = self._settings
        base = settings.group_base_dn or settings.base_dn
        cookie: Any = None
        while True:
            with self._asking("the group search"):
                connection.search(
                    base,
                    query,
                    search_scope=ldap3.SUBTREE,
                    attributes=[settings.group_name_attribute],
                    paged_size=_GROUP_PAGE_SIZE,
                    paged_cookie=cookie,
                    time_limit=self._server_time_limit,
                )
            if connection.result.get("result") != _SUCCESS:
                raise self._search_failed(connection, f"the group search under {base!r}")
            yield from entries_in(connection.response)
            controls = connection.result.get("controls") or {}
            cookie = controls.get(_PAGED_RESULTS_OID, {}).get("value", {}).get("cookie")
            if not cookie:
                return

    def _attribute_of(self, connection: ldap3.Connection, dn: str, attribute: str) -> list[str]:
        with self._asking("reading a group"):
            connection.search(
                dn,
                "(objectClass=*)",
                search_scope=ldap3.BASE,
                attributes=[attribute],
                time_limit=self._server_time_limit,
            )
        code = connection.result.get("result")
        if code == _NO_SUCH_OBJECT:  # a stale memberOf value naming a deleted group
            return []
        if code != _SUCCESS:
            raise self._search_failed(connection, f"reading the group {dn!r}")
        entries = entries_in(connection.response)
        return entries[0].values(attribute) if entries else []

    def _name_of(self, group_dn: str) -> str | None:
        name = group_name_from_dn(group_dn, self._settings.group_name_attribute)
        if name is None:
            log.warning("LDAP: cannot read a group name from the DN %r; ignored", group_dn)
        return name

    def _check_group_count(self, seen: dict[str, str]) -> None:
        if len(seen) > MAX_GROUPS:
            raise DirectoryUnavailable(
                f"LDAP server {self._settings.url} lists more than {MAX_GROUPS} groups for one user"
            )

    def _search_failed(self, connection: ldap3.Connection, what: str) -> DirectoryUnavailable:
        return DirectoryUnavailable(
            f"LDAP server {self._settings.url}: {what} failed ({_said(connection)})"
        )


class _StandardTls(ldap3.Tls):
    """ldap3's own Tls turns the ssl module's host name check off and matches names itself
    with `ssl.match_hostname`, deprecated and gone in Python 3.12 (its fallback refuses IP
    addresses). This one lets the ssl module check the chain and the name, DNS or IP, during
    the handshake, and sends SNI."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=do_handshake,
            server_hostname=self._host,
        )


def _tls_context(settings: LdapSettings) -> ssl.SSLContext | None:
    """The TLS context for ldaps:// or StartTLS (None for clear text): certificates and host
    names always checked, against `ca_file` or the system's CAs."""
    if settings.scheme != "ldaps" and not settings.start_tls:
        return None
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot use the LDAP CA file {settings.ca_file!r}: {exc}"
        ) from exc


if TYPE_CHECKING:  # mypy proves the class fits the protocol the login service expects
    _fits_the_protocol: type[ExternalDirectory] = LdapDirectory


def _new_dns(dns: list[str], seen: dict[str, str]) -> list[str]:
    """The DNs not seen before (compared case-insensitively), now added to `seen`, which maps
    each case-folded DN to its spelling."""
    fresh = []
    for dn in dns:
        key = dn.casefold()
        if key not in seen:
            seen[key] = dn
            fresh.append(dn)
    return fresh


def _close(connection: ldap3.Connection) -> None:
    """Says goodbye if the connection still works and drops it either way: closing must
    never turn an answer into an error."""
    try:
        connection.unbind()
    except Exception:
        with contextlib.suppress(Exception):
            connection.strategy.close()


def _said(connection: ldap3.Connection) -> str:
    result = connection.result or {}
    words = [str(result.get("description") or "no answer")]
    if message := str(result.get("message") or "").strip():
        words.append(message[:200])
    return ": ".join(words)

"""LdapDirectory against a real OpenLDAP server (Debian's slapd) on loopback: passwords,
canonical names, groups through memberOf and through a group search (nested ones included),
injection attempts, refusals, a wrong service account, a stopped or silent server, and TLS
(StartTLS and LDAPS) with certificate checking."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import free_port
from tests.support.slapd import (
    BASE_DN,
    GROUPS,
    OTHER_HOST,
    PASSWORDS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SPECIAL_UID,
    RunningSlapd,
    running_slapd,
)
from twofa.directories.base import DirectoryUnavailable, DirectoryUser
from twofa.directories.ldap import LdapDirectory, LdapSettings

ALICE_GROUPS = ("admins", "engineering", "staff")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSlapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def settings_for(slapd: RunningSlapd, **overrides: Any) -> LdapSettings:
    fields: dict[str, Any] = {
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "base_dn": BASE_DN,
        "timeout_s": 5.0,
        **overrides,
    }
    return LdapSettings(**fields)


def directory_for(slapd: RunningSlapd, **overrides: Any) -> LdapDirectory:
    return LdapDirectory(settings_for(slapd, **overrides))


GROUP_SEARCH = {"group_source": "group_search", "group_base_dn": GROUPS}


# --- passwords and who the user is ---------------------------------------------------


async def test_right_password_gives_the_user_with_name_mail_and_nested_groups(
    slapd: RunningSlapd,
) -> None:
    user = await directory_for(slapd).authenticate("alice", "alice-pass")

    assert user == DirectoryUser(
        username="alice",
        display_name="Alice Liddell",
        email="alice@example.org",
        groups=ALICE_GROUPS,
    )


async def test_username_comes_back_in_the_directorys_spelling(slapd: RunningSlapd) -> None:
    user = await directory_for(slapd).authenticate("ALICE", "alice-pass")

    assert user is not None
    assert user.username == "alice"


async def test_password_stored_in_clear_text_is_checked_too(slapd: RunningSlapd) -> None:
    directory = directory_for(slapd)

    user = await directory.authenticate("bob", "bob-pass")

    assert user is not None
    assert (user.username, user.groups) == ("bob", ("admins",))
    assert await directory.authenticate("bob", "bob-pass-wrong") is None


async def test_wrong_password_is_refused(slapd: RunningSlapd) -> None:
    assert await directory_for(slapd).authenticate("alice", "bob-pass") is None


async def test_unknown_user_is_refused(slapd: RunningSlapd) -> None:
    assert await directory_for(slapd).authenticate("mallory", "alice-pass") is None


async def test_empty_password_is_refused_without_asking_the_server(slapd: RunningSlapd) -> None:
    assert await directory_for(slapd).authenticate("alice", "") is None
    # Nothing listens here: had the directory tried a bind, it would have raised.
    nobody = directory_for(slapd, url=f"ldap://127.0.0.1:{free_port()}")
    assert await nobody.authenticate("alice", "") is None


async def test_user_without_mail_or_groups_signs_in_with_empty_ones(slapd: RunningSlapd) -> None:
    user = await directory_for(slapd).authenticate("carol", "carol-pass")

    assert user == DirectoryUser("carol", "Carol Danvers", "", ())


async def test_username_full_of_filter_and_dn_characters_signs_in(slapd: RunningSlapd) -> None:
    for overrides in ({}, GROUP_SEARCH):
        user = await directory_for(slapd, **overrides).authenticate(SPECIAL_UID, "dana-pass")

        assert user is not None, overrides
        assert user.username == SPECIAL_UID
        assert user.groups == ("engineering", "staff"), overrides


async def test_a_username_two_entries_share_is_refused(slapd: RunningSlapd) -> None:
    directory = directory_for(slapd)

    assert await directory.authenticate("twin", PASSWORDS["twin"]) is None
    assert await directory.groups_of("twin") is None


INJECTIONS = [
    "*",
    "alice*",
    "al*ce",
    "alice)(uid=*",
    "*)(|(uid=*",
    "*)(uid=*))(|(uid=*",
    "alice)(|(objectClass=*",
    "(uid=alice)",
    "alice\x00",
    "\x00",
    "alice\\",
    "alice\\2a",
    "alice\\00",
    "dana (ops)*",
    "uid=alice,ou=people,dc=example,dc=org",
]


@pytest.mark.parametrize("username", INJECTIONS)
async def test_filter_injection_never_signs_in_anyone(slapd: RunningSlapd, username: str) -> None:
    directory = directory_for(slapd)

    for password in PASSWORDS.values():
        assert await directory.authenticate(username, password) is None
    assert await directory.groups_of(username) is None


# --- groups --------------------------------------------------------------------------


async def test_groups_through_a_group_search_include_nested_ones(slapd: RunningSlapd) -> None:
    user = await directory_for(slapd, **GROUP_SEARCH).authenticate("alice", "alice-pass")

    assert user is not None
    assert user.groups == ALICE_GROUPS


async def test_nested_groups_can_be_left_out(slapd: RunningSlapd) -> None:
    for overrides in ({}, GROUP_SEARCH):
        directory = directory_for(slapd, nested_groups=False, **overrides)

        assert await directory.groups_of("alice") == ("admins", "engineering"), overrides


async def test_groups_of_reads_current_groups(slapd: RunningSlapd) -> None:
    for overrides in ({}, GROUP_SEARCH):
        directory = directory_for(slapd, **overrides)

        assert await directory.groups_of("alice") == ALICE_GROUPS, overrides
        assert await directory.groups_of("bob") == ("admins",), overrides
        assert await directory.groups_of("carol") == (), overrides


async def test_groups_of_an_unknown_user_is_none(slapd: RunningSlapd) -> None:
    for overrides in ({}, GROUP_SEARCH):
        assert await directory_for(slapd, **overrides).groups_of("mallory") is None


# --- the directory cannot be asked -----------------------------------------------------


async def test_refused_service_account_makes_the_directory_unavailable(
    slapd: RunningSlapd,
) -> None:
    directory = directory_for(slapd, bind_password="not-the-service-password")

    with pytest.raises(DirectoryUnavailable, match="refused the service account") as caught:
        await directory.authenticate("alice", "alice-pass")
    assert slapd.url in str(caught.value)
    with pytest.raises(DirectoryUnavailable):
        await directory.groups_of("alice")


async def test_missing_base_dn_makes_the_directory_unavailable(slapd: RunningSlapd) -> None:
    directory = directory_for(slapd, base_dn="ou=nowhere,dc=example,dc=org")

    with pytest.raises(DirectoryUnavailable, match="user search"):
        await directory.authenticate("alice", "alice-pass")


async def test_stopped_server_makes_the_directory_unavailable(tmp_path: Path) -> None:
    with running_slapd(tmp_path) as own_slapd:
        directory = directory_for(own_slapd)
        assert await directory.groups_of("alice") == ALICE_GROUPS
        own_slapd.stop()

        with pytest.raises(DirectoryUnavailable, match="connecting") as caught:
            await directory.authenticate("alice", "alice-pass")
        assert own_slapd.url in str(caught.value)


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A port that accepts connections (the kernel does) but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    with listener:
        yield listener


async def test_server_that_never_answers_makes_the_directory_unavailable(
    slapd: RunningSlapd, silent_listener: socket.socket
) -> None:
    port = silent_listener.getsockname()[1]
    directory = directory_for(slapd, url=f"ldap://127.0.0.1:{port}", timeout_s=0.5)

    with pytest.raises(DirectoryUnavailable, match="timed out") as caught:
        await directory.authenticate("alice", "alice-pass")
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_event_loop_keeps_running_while_the_server_is_slow(
    slapd: RunningSlapd, silent_listener: socket.socket
) -> None:
    port = silent_listener.getsockname()[1]
    directory = directory_for(slapd, url=f"ldap://127.0.0.1:{port}", timeout_s=30)
    pending = asyncio.create_task(directory.authenticate("alice", "alice-pass"))

    # This coroutine gets to run while the directory waits for the server's answer.
    connection, _ = await asyncio.wait_for(
        asyncio.get_running_loop().sock_accept(silent_listener), timeout=10
    )
    assert not pending.done()
    connection.close()  # the server hangs up without answering

    with pytest.raises(DirectoryUnavailable):
        await pending


# --- TLS -------------------------------------------------------------------------------


async def test_start_tls_with_the_servers_ca_works(slapd: RunningSlapd) -> None:
    directory = directory_for(slapd, start_tls=True, ca_file=str(slapd.ca_file))

    user = await directory.authenticate("alice", "alice-pass")

    assert user is not None
    assert user.groups == ALICE_GROUPS


async def test_start_tls_to_a_host_name_the_certificate_names_works(slapd: RunningSlapd) -> None:
    directory = directory_for(
        slapd, url=f"ldap://localhost:{slapd.port}", start_tls=True, ca_file=str(slapd.ca_file)
    )

    assert await directory.groups_of("bob") == ("admins",)


async def test_ldaps_with_the_servers_ca_works(slapd: RunningSlapd) -> None:
    directory = directory_for(slapd, url=slapd.ldaps_url, ca_file=str(slapd.ca_file))

    user = await directory.authenticate("bob", "bob-pass")

    assert user is not None
    assert user.username == "bob"


@pytest.mark.parametrize("scheme", ["start_tls", "ldaps"])
async def test_certificate_from_an_untrusted_ca_is_refused(
    slapd: RunningSlapd, scheme: str
) -> None:
    tls: dict[str, Any] = {"start_tls": True} if scheme == "start_tls" else {"url": slapd.ldaps_url}
    directory = directory_for(slapd, ca_file=str(slapd.foreign_ca_file), **tls)

    with pytest.raises(DirectoryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await directory.authenticate("alice", "alice-pass")


async def test_certificate_for_another_name_is_refused(slapd: RunningSlapd) -> None:
    # The same server and CA, reached at an address its certificate does not name.
    directory = directory_for(
        slapd,
        url=f"ldap://{OTHER_HOST}:{slapd.port}",
        start_tls=True,
        ca_file=str(slapd.ca_file),
    )

    with pytest.raises(
        DirectoryUnavailable, match=r"StartTLS.*CERTIFICATE_VERIFY_FAILED.*mismatch"
    ):
        await directory.authenticate("alice", "alice-pass")

"""The console's User Management over real HTTP: the status of each user in words, every action
with its audit record, search and pagination, the CSV bulk enable (all or nothing), lock-out
and unlock, and a 403 for anyone who is not an admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningSimulator
from tests.support.databases import postgres_database, sqlite_database
from tests.support.gateway import csrf_from, sign_in
from tests.support.user_management import (
    ADMIN,
    AdminBrowser,
    signed_in_admin,
    status_phrases,
    user_row_html,
)
from twofa.domain.account_input import NewUser
from twofa.services.runtime import Gateway
from twofa.storage.repositories import DuoEnrolments, Users


@pytest.fixture
async def console(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[AdminBrowser]:
    async with sqlite_database(tmp_path) as url, signed_in_admin(url, simulator) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def console_on_any_database(
    request: pytest.FixtureRequest, tmp_path: Path, simulator: RunningSimulator
) -> AsyncIterator[AdminBrowser]:
    factory = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database()
    async with factory as url, signed_in_admin(url, simulator) as running:
        yield running


async def users_page(console: AdminBrowser, **params: str) -> str:
    answer = await console.client.get("/admin/users", params=params)
    assert answer.status_code == 200, answer.text
    return answer.text


async def twofa_switch(console: AdminBrowser, username: str) -> bool:
    async def read(gateway: Gateway) -> bool:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name(username)
        assert user is not None
        return user.twofa_enabled

    return await console.query(read)


async def test_each_user_has_their_status_in_words(console: AdminBrowser) -> None:
    page = await users_page(console)
    assert status_phrases(page, "alice") == [
        "required — via group engineering",
        "not enrolled yet: sets up Duo Push at the next sign-in",
    ]
    assert status_phrases(page, "bob") == ["not required"]


async def test_enrolled_user_shows_duo_push(console: AdminBrowser) -> None:
    async def enrol_alice(gateway: Gateway) -> None:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name("alice")
            assert user is not None
            enrolment = await DuoEnrolments(db).get_or_create(user.id)
            enrolment.configured_at = gateway.clock.now()

    await console.query(enrol_alice)
    assert "enrolled: Duo Push" in status_phrases(await users_page(console), "alice")


async def test_switching_2fa_on_for_a_user_is_audited(console: AdminBrowser) -> None:
    answer = await console.post("/admin/users/policy", {"username": "bob", "enabled": "1"})
    assert answer.status_code == 303
    follow = await console.client.get(answer.headers["location"])
    assert "2FA switched on for bob." in follow.text
    assert status_phrases(follow.text, "bob")[0] == "required — set for the user"
    assert await twofa_switch(console, "bob")
    [record] = await console.audit_rows("policy_user")
    assert (record.username, record.outcome) == ("bob", "ok")
    assert record.detail == {"actor": ADMIN, "before": False, "after": True}

    await console.post("/admin/users/policy", {"username": "bob", "enabled": "0"})
    assert not await twofa_switch(console, "bob")
    assert status_phrases(await users_page(console), "bob") == ["not required"]


async def test_reset_2fa_removes_the_enrolment_and_is_audited(console: AdminBrowser) -> None:
    async def enrolled(gateway: Gateway) -> bool:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name("alice")
            assert user is not None
            return await DuoEnrolments(db).get(user.id) is not None

    async def enrol(gateway: Gateway) -> None:
        async with gateway.db.begin() as db:
            user = await Users(db).by_name("alice")
            assert user is not None
            row = await DuoEnrolments(db).get_or_create(user.id)
            row.configured_at = gateway.clock.now()

    await console.query(enrol)
    answer = await console.post("/admin/users/reset-2fa", {"username": "alice"})
    assert answer.status_code == 303
    assert not await console.query(enrolled)
    [record] = await console.audit_rows("user_reset_2fa")
    assert (record.username, record.detail["actor"]) == ("alice", ADMIN)


async def test_five_wrong_passwords_lock_the_user_until_unlocked(console: AdminBrowser) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as stranger:
        for _ in range(5):
            assert (await sign_in(stranger, "bob", "wrong")).status_code == 401
        assert (await sign_in(stranger, "bob")).status_code == 429
        page = await users_page(console, q="bob")
        phrases = status_phrases(page, "bob")
        assert phrases[0].startswith("locked until ")
        assert phrases[0].endswith(" UTC")
        assert 'action="/admin/users/unlock"' in user_row_html(page, "bob")

        answer = await console.post("/admin/users/unlock", {"username": "bob", "q": "bob"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/admin/users?q=bob&done=unlocked&who=bob"
        assert status_phrases(await users_page(console), "bob") == ["not required"]
        assert (await sign_in(stranger, "bob")).status_code == 303
    [record] = await console.audit_rows("user_unlock")
    assert record.detail == {"actor": ADMIN, "was_locked": True}


async def test_disabling_an_account_ends_sign_in_until_enabled(console: AdminBrowser) -> None:
    answer = await console.post("/admin/users/account", {"username": "bob", "enabled": "0"})
    assert answer.status_code == 303
    assert status_phrases(await users_page(console), "bob")[0] == "disabled"
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as browser:
        assert (await sign_in(browser, "bob")).status_code == 401
        await console.post("/admin/users/account", {"username": "bob", "enabled": "1"})
        assert (await sign_in(browser, "bob")).status_code == 303
    kinds = [(row.kind, row.username) for row in await console.audit_rows()]
    assert ("user_disable", "bob") in kinds
    assert ("user_enable", "bob") in kinds


async def test_an_admin_cannot_disable_or_delete_themselves(console: AdminBrowser) -> None:
    disabled = await console.post("/admin/users/account", {"username": ADMIN, "enabled": "0"})
    assert disabled.status_code == 400
    assert "cannot disable your own account" in disabled.text
    deleted = await console.post("/admin/users/delete", {"username": ADMIN, "confirm": "yes"})
    assert deleted.status_code == 400
    assert (await console.client.get("/admin/users")).status_code == 200


async def test_delete_asks_first_then_removes_the_user(console: AdminBrowser) -> None:
    confirm = await console.client.get("/admin/users/delete", params={"username": "bob"})
    assert confirm.status_code == 200
    assert "Delete user bob?" in confirm.text
    assert "cannot be undone" in confirm.text

    unconfirmed = await console.post("/admin/users/delete", {"username": "bob"})
    assert unconfirmed.status_code == 303
    assert unconfirmed.headers["location"] == "/admin/users/delete?username=bob"
    assert 'data-username="bob"' in await users_page(console)

    answer = await console.post(
        "/admin/users/delete",
        {"username": "bob", "confirm": "yes"},
        page="/admin/users/delete?username=bob",
    )
    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "Deleted user bob." in page
    assert 'data-username="bob"' not in page
    [record] = await console.audit_rows("user_delete")
    assert (record.username, record.detail) == ("bob", {"actor": ADMIN})


async def test_delete_of_an_unknown_user_is_a_clear_404(console: AdminBrowser) -> None:
    answer = await console.client.get("/admin/users/delete", params={"username": "ghost"})
    assert answer.status_code == 404
    assert "No user &#39;ghost&#39;." in answer.text


async def test_add_user_creates_a_local_user_who_can_sign_in(console: AdminBrowser) -> None:
    answer = await console.post(
        "/admin/users/add",
        {
            "username": "carol",
            "display_name": "Carol Danvers",
            "email": "carol@example.com",
            "password": "carol-password-1",
        },
    )
    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "Added user carol." in page
    assert "Carol Danvers · carol@example.com" in user_row_html(page, "carol")
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as browser:
        assert (await sign_in(browser, "carol", "carol-password-1")).status_code == 303
    [record] = [row for row in await console.audit_rows("user_add") if row.username == "carol"]
    assert record.detail == {"actor": ADMIN, "is_admin": False}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"username": "bad name"}, "username", "invalid username"),
        ({"username": "bob"}, "username", "user &#39;bob&#39; already exists"),
        ({"email": "not-an-address"}, "email", "not an e-mail address"),
        ({"password": ""}, "password", "a password is required"),
        ({"display_name": "x" * 201}, "display_name", "at most 200 characters"),
    ],
)
async def test_bad_new_user_input_is_shown_next_to_its_field(
    console: AdminBrowser, fields: dict[str, str], field: str, message: str
) -> None:
    form = {
        "username": "dave",
        "display_name": "",
        "email": "",
        "password": "dave-password-1",
        **fields,
    }
    answer = await console.post("/admin/users/add", form)
    assert answer.status_code == 400
    assert f'<p class="field-error" id="{field}-problem" role="alert">{message}' in answer.text
    assert f'value="{form["username"]}"' in answer.text  # what was typed is kept

    async def usernames(gateway: Gateway) -> list[str]:
        return [user.username for user in await gateway.accounts.users()]

    assert sorted(await console.query(usernames)) == ["alice", "bob", ADMIN]


async def test_search_and_pagination(console_on_any_database: AdminBrowser) -> None:
    console = console_on_any_database

    async def add_many(gateway: Gateway) -> None:
        await gateway.accounts.import_users(
            [NewUser(f"user{n:02}", f"Tester {n:02}", f"u{n:02}@corp.example") for n in range(25)]
        )

    await console.query(add_many)
    first = await users_page(console, q="tester")
    assert "users 1 to 20 of 25" in first
    assert first.count('<tr data-username="user') == 20
    assert 'href="/admin/users?q=tester&amp;page=2" rel="next"' in first
    second = await users_page(console, q="tester", page="2")
    assert "users 21 to 25 of 25" in second
    assert 'data-username="user24"' in second
    assert 'data-username="user00"' not in second
    past_the_end = await users_page(console, q="tester", page="99")
    assert "users 21 to 25 of 25" in past_the_end  # the last page instead of an empty one
    by_email = await users_page(console, q="U07@CORP")
    assert "users 1 to 1 of 1" in by_email
    assert 'data-username="user07"' in by_email
    assert "No users found." in await users_page(console, q="nobody-like-this")


async def test_group_2fa_switch_and_member_count(console: AdminBrowser) -> None:
    page = (await console.client.get("/admin/groups")).text
    assert '<tr data-group="engineering">' in page
    assert "<td>1</td>" in page  # alice
    answer = await console.post(
        "/admin/groups/policy", {"name": "engineering", "enabled": "0"}, page="/admin/groups"
    )
    assert answer.status_code == 303
    assert status_phrases(await users_page(console), "alice") == ["not required"]
    record = (await console.audit_rows("policy_group"))[-1]  # the seed switched it on first
    assert record.detail == {"actor": ADMIN, "group": "engineering", "before": True, "after": False}


async def test_add_group_and_refuse_a_duplicate(console: AdminBrowser) -> None:
    answer = await console.post("/admin/groups/add", {"name": "finance"}, page="/admin/groups")
    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "Added group finance." in page
    assert '<tr data-group="finance">' in page
    duplicate = await console.post(
        "/admin/groups/add", {"name": "engineering"}, page="/admin/groups"
    )
    assert duplicate.status_code == 400
    assert 'id="name-problem" role="alert">group &#39;engineering&#39; already exists' in (
        duplicate.text
    )
    assert [row.detail["group"] for row in await console.audit_rows("group_add")] == [
        "engineering",  # the seed's
        "finance",
    ]


async def upload(console: AdminBrowser, content: bytes) -> httpx.Response:
    return await console.client.post(
        "/admin/users/bulk-enable",
        data={"csrf_token": await console.csrf()},
        files={"file": ("users.csv", content, "text/csv")},
    )


async def test_csv_bulk_enable_switches_on_every_listed_user(console: AdminBrowser) -> None:
    await console.post("/admin/users/add", {"username": "carol", "password": "carol-password-1"})
    answer = await upload(console, b"username,comment\nbob,ops\r\ncarol,\n\nbob,again\n")
    assert answer.status_code == 303
    page = (await console.client.get(answer.headers["location"])).text
    assert "2 switched on, 0 already on" in page
    assert await twofa_switch(console, "bob")
    assert await twofa_switch(console, "carol")
    records = await console.audit_rows("policy_user")
    assert sorted(row.username for row in records) == ["bob", "carol"]
    assert all(row.detail["source"] == "csv" for row in records)


async def test_csv_with_unknown_users_changes_nothing_and_names_each_line(
    console: AdminBrowser,
) -> None:
    answer = await upload(console, b"username\nbob\nghost\nalice\n\nphantom\n")
    assert answer.status_code == 400
    assert "Nothing was changed:" in answer.text
    assert "<li>line 3: no user &#39;ghost&#39;</li>" in answer.text
    assert "<li>line 6: no user &#39;phantom&#39;</li>" in answer.text
    assert not await twofa_switch(console, "bob")
    assert await console.audit_rows("policy_user") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name\nbob\n", "line 1: the first line must be a header with a username column"),
        (b"username,x\nbob,1\n,2\n", "line 3: no username on this line"),
        (b"username\n", "line 1: the file lists no users"),
        (b"username\n\xff\xfe\n", "not UTF-8 text"),
        (b"", "choose a CSV file with a username column"),
    ],
)
async def test_malformed_csv_is_refused_with_the_reason(
    console: AdminBrowser, content: bytes, message: str
) -> None:
    answer = await upload(console, content)
    assert answer.status_code == 400
    assert message in answer.text
    assert not await twofa_switch(console, "bob")


async def test_console_forms_without_csrf_token_change_nothing(console: AdminBrowser) -> None:
    answer = await console.client.post(
        "/admin/users/policy", data={"username": "bob", "enabled": "1"}
    )
    assert answer.status_code == 403
    assert not await twofa_switch(console, "bob")


ADMIN_GETS = [
    "/admin",
    "/admin/users",
    "/admin/groups",
    "/admin/users/delete?username=alice",
    "/admin/audit",
    "/admin/audit.csv",
]
ADMIN_POSTS = [
    "/admin/users/add",
    "/admin/users/policy",
    "/admin/users/reset-2fa",
    "/admin/users/unlock",
    "/admin/users/account",
    "/admin/users/delete",
    "/admin/users/bulk-enable",
    "/admin/groups/add",
    "/admin/groups/policy",
]


async def test_a_non_admin_gets_403_on_every_console_url(console: AdminBrowser) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as bob:
        assert (await sign_in(bob, "bob")).status_code == 303
        token = csrf_from((await bob.get("/")).text)  # a valid token: only the role is wrong
        for path in ADMIN_GETS:
            answer = await bob.get(path)
            assert answer.status_code == 403, path
            assert "for administrators only" in answer.text
        form = {"csrf_token": token, "username": "alice", "enabled": "1", "confirm": "yes"}
        for path in ADMIN_POSTS:
            answer = await bob.post(path, data={**form, "name": "bob-group"})
            assert answer.status_code == 403, path

    async def groups(gateway: Gateway) -> list[str]:
        return [group.name for group in await gateway.accounts.groups()]

    assert await twofa_switch(console, "alice") is False
    assert await console.query(groups) == ["engineering"]
    denied = await console.audit_rows("admin_denied")
    assert len(denied) == len(ADMIN_GETS) + len(ADMIN_POSTS)
    assert {row.username for row in denied} == {"bob"}


async def test_signed_out_visitors_are_sent_to_sign_in(console: AdminBrowser) -> None:
    async with httpx.AsyncClient(base_url=console.base_url, timeout=30) as visitor:
        answer = await visitor.get("/admin/users")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?next=%2Fadmin%2Fusers"

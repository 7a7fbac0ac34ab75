"""The methods' settings over the REST API, against a real SMTP server (aiosmtpd): the mail
server (the password write-only, every problem named, Send test e-mail), who chooses the
address codes go to, and the name authenticator apps show; each save audited under the
token's name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningSimulator
from tests.integration.test_api import ACTOR, Api, error_of, started_api
from tests.support.databases import sqlite_database
from tests.support.smtp import SmtpServer

SMTP_PASSWORD = "smtp-Pa55-api"


@pytest.fixture
async def api(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Api]:
    async with sqlite_database(tmp_path) as url, started_api(url, simulator) as running:
        yield running


def server_body(mail: SmtpServer, **changes: Any) -> dict[str, Any]:
    return {
        "host": mail.host,
        "port": mail.port,
        "security": "none",
        "from_address": "twofa@example.com",
        "timeout_s": 5,
        **changes,
    }


async def test_the_mail_server_round_trips_without_ever_showing_the_password(
    api: Api, mail: SmtpServer
) -> None:
    assert (await api.http.get("/settings/email")).json()["configured"] is False

    saved = await api.http.put(
        "/settings/email",
        json=server_body(mail, username="mailer", password=SMTP_PASSWORD),
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {
        "configured": True,
        "host": mail.host,
        "port": mail.port,
        "security": "none",
        "from_address": "twofa@example.com",
        "username": "mailer",
        "password_set": True,
        "timeout_s": 5,
    }
    kept = await api.http.put("/settings/email", json=server_body(mail, username="mailer"))
    assert kept.json()["password_set"] is True  # no password in the body: the stored one stays
    assert SMTP_PASSWORD not in (await api.http.get("/settings/email")).text
    [first, second] = await api.audit("settings_smtp")
    assert first.username == second.username == ACTOR
    assert SMTP_PASSWORD not in str(first.detail)


async def test_a_refused_mail_server_names_every_field_and_keeps_the_old_one(
    api: Api, mail: SmtpServer
) -> None:
    assert (await api.http.put("/settings/email", json=server_body(mail))).status_code == 200

    refused = await api.http.put(
        "/settings/email",
        json=server_body(mail, host="http://smtp.example.com", from_address="nobody"),
    )

    error = error_of(refused, 400, "rejected")
    assert set(error["fields"]) == {"host", "from_address"}
    assert (await api.http.get("/settings/email")).json()["host"] == mail.host


async def test_send_test_email_reports_what_happened(api: Api, mail: SmtpServer) -> None:
    before = await api.http.post("/settings/email/test", json={"to": "ops@example.com"})
    assert before.json()["sent"] is False  # nothing saved yet
    assert mail.received == []
    await api.http.put("/settings/email", json=server_body(mail))

    sent = await api.http.post("/settings/email/test", json={"to": "ops@example.com"})

    assert sent.json() == {"sent": True, "message": "Sent a test e-mail to ops@example.com."}
    assert len(mail.to("ops@example.com")) == 1


async def test_who_chooses_the_address_round_trips_and_is_audited(api: Api) -> None:
    assert (await api.http.get("/settings/email-codes")).json() == {"users_choose_address": False}

    saved = await api.http.put("/settings/email-codes", json={"users_choose_address": True})

    assert saved.json() == {"users_choose_address": True}
    assert (await api.http.get("/settings/email-codes")).json() == {"users_choose_address": True}
    [event] = await api.audit("settings_email_codes")
    assert event.username == ACTOR
    unknown = await api.http.put("/settings/email-codes", json={"users_choose": True})
    assert set(error_of(unknown, 422, "invalid")["fields"]) >= {"users_choose"}


async def test_the_authenticator_app_name_round_trips_and_refuses_a_colon(api: Api) -> None:
    assert (await api.http.get("/settings/authenticator-app")).json() == {"issuer": "twofa"}

    saved = await api.http.put("/settings/authenticator-app", json={"issuer": " Acme SSO "})
    assert saved.json() == {"issuer": "Acme SSO"}

    refused = await api.http.put("/settings/authenticator-app", json={"issuer": "Acme:SSO"})
    assert "no colon" in error_of(refused, 400, "rejected")["fields"]["issuer"]
    assert (await api.http.get("/settings/authenticator-app")).json() == {"issuer": "Acme SSO"}
    [event] = await api.audit("settings_authenticator_app")
    assert event.username == ACTOR


async def test_the_question_pool_is_replaced_whole_and_checked_like_one_question(
    api: Api,
) -> None:
    built_in = (await api.http.get("/settings/security-questions")).json()
    assert built_in["customised"] is False
    assert built_in["answers_required"] == 3
    wanted = ["Who was your first boss?", "What was your first car?", "Where did you  meet?"]

    saved = await api.http.put(
        "/settings/security-questions", json={"questions": wanted, "answers_required": 2}
    )

    assert saved.status_code == 200, saved.text
    assert saved.json() == {
        "questions": [
            "Who was your first boss?",
            "What was your first car?",
            "Where did you meet?",
        ],
        "answers_required": 2,
        "customised": True,
    }
    [event] = await api.audit("settings_security_questions")
    assert event.username == ACTOR
    assert event.detail["before"]["answers_required"] == 3


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"questions": ["Who?", "What was your first car?"], "answers_required": 1}, "'Who?'"),
        (
            {"questions": ["What was your first car?"] * 2, "answers_required": 1},
            "already in the pool",
        ),
        ({"questions": ["What was your first car?"], "answers_required": 2}, "at most the 1"),
    ],
)
async def test_a_pool_that_breaks_a_rule_is_refused_whole(
    api: Api, body: dict[str, Any], problem: str
) -> None:
    refused = await api.http.put("/settings/security-questions", json=body)

    fields = error_of(refused, 400, "rejected")["fields"]
    assert problem in " ".join(fields.values())
    assert (await api.http.get("/settings/security-questions")).json()["customised"] is False
    assert await api.audit("settings_security_questions") == []

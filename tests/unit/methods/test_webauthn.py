"""Security keys and passkeys as a method, answered by a software key that behaves like a
browser with a security key: registration round trip; assertions accepted from the right key,
origin, relying party and challenge only; a counter that goes backwards (a cloned key)
refused and audited; a replayed assertion refused by the service; settings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.contract.harness import USERNAME, Harness, harness_on
from tests.support.authenticator_webauthn import (
    KeyAlreadyRegistered,
    SecurityKeyHolder,
    SoftwareKey,
    assertion_response,
    b64url,
    registration_response,
    tampered,
)
from tests.support.databases import sqlite_database
from twofa.config import WebAuthnSettings, load_settings
from twofa.domain.client import NO_CLIENT
from twofa.errors import ConfigurationError
from twofa.methods.base import (
    EnrolmentRefused,
    MethodContext,
    MethodUser,
    NewCredential,
    ResponseRejected,
    StoredCredential,
)
from twofa.methods.webauthn import CLONED_KEY, WebAuthnMethod, origin_of
from twofa.services.second_factor.challenges import EXPIRED_MESSAGE
from twofa.services.second_factor.failures import FAILURE_MESSAGES
from twofa.services.second_factor.outcomes import SecondFactorError
from twofa.services.state.sessions import Level
from twofa.storage.audit_log import AuditLog

USER = MethodUser(7, "alice", "Alice Liddell", "alice@example.com")
CONTEXT = MethodContext(USER, datetime(2026, 11, 28, tzinfo=UTC))
ORIGIN, RP_ID = "https://sso.example.com", "sso.example.com"
METHOD = WebAuthnMethod(WebAuthnSettings(), ORIGIN)


async def enrol(
    method: WebAuthnMethod = METHOD, *, counts_signatures: bool = True, name: str = "Blue key"
) -> tuple[SoftwareKey, StoredCredential]:
    draft = await method.begin_enrolment(CONTEXT)
    credential, key = registration_response(
        draft.show["options"], ORIGIN, RP_ID, counts_signatures=counts_signatures
    )
    new = await method.finish_enrolment(
        CONTEXT, draft.keep, None, {"credential": credential, "name": name}
    )
    return key, stored(new)


def stored(new: NewCredential, credential_id: int = 41) -> StoredCredential:
    return StoredCredential(credential_id, new.label, None, dict(new.state), 1)


async def sign(key: SoftwareKey, keys: list[StoredCredential], origin: str = ORIGIN) -> str:
    prompt = await METHOD.start(CONTEXT, keys)
    return assertion_response(prompt.show["options"], key, origin)


async def verify_with(
    key: SoftwareKey, keys: list[StoredCredential], origin: str = ORIGIN
) -> StoredCredential:
    """One sign-in with `key`; returns its credential as the service would store it after."""
    prompt = await METHOD.start(CONTEXT, keys)
    credential = assertion_response(prompt.show["options"], key, origin)
    verified = await METHOD.verify(CONTEXT, prompt.keep, keys, {"credential": credential})
    used = next(c for c in keys if c.id == verified.credential_id)
    assert verified.state is not None
    return replace(used, state=dict(verified.state), version=used.version + 1)


# Registration


async def test_registration_round_trip_keeps_the_key_and_its_name() -> None:
    key, credential = await enrol(name="  Blue   key ")

    assert credential.label == "Blue key"
    assert credential.secret is None  # a public key is nothing to hide
    state = credential.state
    assert state["credential_id"] == b64url(key.credential_id)
    assert state["sign_count"] == 0
    assert state["transports"] == ["usb", "nfc"]
    assert state["aaguid"] == "00000000-0000-0000-0000-000000000000"
    assert state["user_handle"]
    assert state["public_key"]


async def test_a_key_without_a_name_is_called_security_key() -> None:
    _, credential = await enrol(name="   ")
    assert credential.label == "Security key"


async def test_a_name_longer_than_my_2fa_allows_is_refused_with_a_reason() -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    credential, _ = registration_response(draft.show["options"], ORIGIN, RP_ID)
    with pytest.raises(EnrolmentRefused, match="shorter name"):
        await METHOD.finish_enrolment(
            CONTEXT, draft.keep, None, {"credential": credential, "name": "k" * 61}
        )


async def test_registration_options_ask_for_a_touch_no_attestation_and_no_personal_id() -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    options = json.loads(draft.show["options"])

    assert options["rp"] == {"name": "twofa", "id": RP_ID}
    assert options["user"]["name"] == "alice"
    assert options["user"]["displayName"] == "Alice Liddell"
    assert "alice" not in json.dumps(options["user"]["id"])
    assert options["attestation"] == "none"
    assert options["authenticatorSelection"]["userVerification"] == "discouraged"
    assert options["authenticatorSelection"]["residentKey"] == "discouraged"
    assert options["challenge"] == draft.keep["challenge"]
    again = json.loads((await METHOD.begin_enrolment(CONTEXT)).show["options"])
    assert again["challenge"] != options["challenge"]
    assert again["user"]["id"] != options["user"]["id"]


async def test_registration_options_exclude_the_keys_the_user_has() -> None:
    _, first = await enrol()
    _, second = await enrol()
    draft = await METHOD.begin_enrolment(CONTEXT, [first, replace(second, id=42)])
    excluded = json.loads(draft.show["options"])["excludeCredentials"]
    assert [item["id"] for item in excluded] == [
        first.state["credential_id"],
        second.state["credential_id"],
    ]
    assert excluded[0]["transports"] == ["usb", "nfc"]


async def test_a_browser_honouring_the_exclusions_refuses_to_register_a_key_again() -> None:
    key, credential = await enrol()
    draft = await METHOD.begin_enrolment(CONTEXT, [credential])
    with pytest.raises(KeyAlreadyRegistered):
        registration_response(draft.show["options"], ORIGIN, RP_ID, holding=key)


async def test_a_key_the_user_already_registered_is_refused_with_a_reason() -> None:
    """A browser that ignores the exclusions, or another tab that registered the key after
    this page was opened: the server says so, it does not store the key twice."""
    key, credential = await enrol()
    draft = await METHOD.begin_enrolment(CONTEXT)  # opened before the key was registered
    again, _ = registration_response(
        draft.show["options"], ORIGIN, RP_ID, holding=key, honour_exclusions=False
    )
    with pytest.raises(EnrolmentRefused) as refused:
        await METHOD.finish_enrolment(
            CONTEXT, draft.keep, None, {"credential": again}, [credential]
        )
    assert refused.value.message == "This security key or passkey is already registered."


async def test_another_key_registers_beside_the_ones_the_user_has() -> None:
    _, credential = await enrol()
    draft = await METHOD.begin_enrolment(CONTEXT, [credential])
    other, _ = registration_response(draft.show["options"], ORIGIN, RP_ID)
    new = await METHOD.finish_enrolment(
        CONTEXT, draft.keep, None, {"credential": other}, [credential]
    )
    assert new.state["credential_id"] != credential.state["credential_id"]


@pytest.mark.parametrize(
    ("origin", "rp_id"),
    [
        ("https://evil.example", RP_ID),  # a phishing page relaying the options
        ("http://sso.example.com", RP_ID),  # the same host without TLS is another origin
        (ORIGIN, "example.com"),  # a key made for another relying party
    ],
)
async def test_registration_from_elsewhere_is_rejected(origin: str, rp_id: str) -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    options = json.loads(draft.show["options"])
    options["rp"]["id"] = rp_id  # as a page that rewrote the options would ask
    credential, _ = registration_response(json.dumps(options), origin, rp_id)
    with pytest.raises(ResponseRejected):
        await METHOD.finish_enrolment(CONTEXT, draft.keep, None, {"credential": credential})


async def test_registration_answering_another_draft_is_rejected() -> None:
    first = await METHOD.begin_enrolment(CONTEXT)
    second = await METHOD.begin_enrolment(CONTEXT)
    credential, _ = registration_response(first.show["options"], ORIGIN, RP_ID)
    with pytest.raises(ResponseRejected, match="challenge"):
        await METHOD.finish_enrolment(CONTEXT, second.keep, None, {"credential": credential})


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "not json",
        "[]",
        "{}",
        '{"id": "AA", "rawId": "AA", "type": "public-key", "response": {}}',
        '{"id": "AA", "rawId": "AA", "type": "public-key", '
        '"response": {"clientDataJSON": "e30", "attestationObject": "oA"}}',
    ],
)
async def test_malformed_registrations_are_rejected_not_crashed_on(junk: str) -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    with pytest.raises(ResponseRejected):
        await METHOD.finish_enrolment(CONTEXT, draft.keep, None, {"credential": junk})


async def test_a_truncated_attestation_is_rejected() -> None:
    draft = await METHOD.begin_enrolment(CONTEXT)
    credential, _ = registration_response(draft.show["options"], ORIGIN, RP_ID)
    cut = json.loads(credential)
    cut["response"]["attestationObject"] = cut["response"]["attestationObject"][:40]
    with pytest.raises(ResponseRejected):
        await METHOD.finish_enrolment(CONTEXT, draft.keep, None, {"credential": json.dumps(cut)})


# Assertions


async def test_start_names_every_key_of_the_user_with_its_transports() -> None:
    _, first = await enrol()
    _, second = await enrol()
    second = replace(second, id=42)
    prompt = await METHOD.start(CONTEXT, [first, second])
    options = json.loads(prompt.show["options"])

    assert options["rpId"] == RP_ID
    assert options["userVerification"] == "discouraged"
    assert [c["id"] for c in options["allowCredentials"]] == [
        first.state["credential_id"],
        second.state["credential_id"],
    ]
    assert options["allowCredentials"][0]["transports"] == ["usb", "nfc"]
    assert options["challenge"] == prompt.keep["challenge"]


async def test_the_registered_key_is_accepted_and_its_counter_kept() -> None:
    key, credential = await enrol()
    after = await verify_with(key, [credential])

    assert after.state["sign_count"] == 1
    assert {k: v for k, v in after.state.items() if k != "sign_count"} == {
        k: v for k, v in credential.state.items() if k != "sign_count"
    }
    assert (await verify_with(key, [after])).state["sign_count"] == 2


async def test_the_right_key_among_several_is_found() -> None:
    _, first = await enrol()
    key, second = await enrol()
    second = replace(second, id=42)
    prompt = await METHOD.start(CONTEXT, [first, second])
    credential = assertion_response(prompt.show["options"], key, ORIGIN)

    verified = await METHOD.verify(
        CONTEXT, prompt.keep, [first, second], {"credential": credential}
    )
    assert verified.credential_id == 42


async def test_an_assertion_from_another_origin_is_rejected() -> None:
    key, credential = await enrol()
    prompt = await METHOD.start(CONTEXT, [credential])
    phished = assertion_response(prompt.show["options"], key, "https://sso.example.com.evil.test")
    with pytest.raises(ResponseRejected, match="origin"):
        await METHOD.verify(CONTEXT, prompt.keep, [credential], {"credential": phished})


async def test_an_assertion_for_another_relying_party_is_rejected() -> None:
    key, credential = await enrol()
    prompt = await METHOD.start(CONTEXT, [credential])
    elsewhere = assertion_response(prompt.show["options"], replace(key, rp_id="evil.test"), ORIGIN)
    with pytest.raises(ResponseRejected, match="RP ID"):
        await METHOD.verify(CONTEXT, prompt.keep, [credential], {"credential": elsewhere})


async def test_an_assertion_for_another_challenge_is_rejected() -> None:
    key, credential = await enrol()
    old = await METHOD.start(CONTEXT, [credential])
    current = await METHOD.start(CONTEXT, [credential])
    answer = assertion_response(old.show["options"], key, ORIGIN)
    with pytest.raises(ResponseRejected, match="challenge"):
        await METHOD.verify(CONTEXT, current.keep, [credential], {"credential": answer})


async def test_an_unknown_key_is_rejected() -> None:
    _, mine = await enrol()
    stranger, _ = await enrol()
    prompt = await METHOD.start(CONTEXT, [mine])
    options = json.loads(prompt.show["options"])
    options["allowCredentials"] = []  # a browser offering any key it has
    answer = assertion_response(json.dumps(options), stranger, ORIGIN)
    with pytest.raises(ResponseRejected, match="unknown credential"):
        await METHOD.verify(CONTEXT, prompt.keep, [mine], {"credential": answer})


async def test_a_tampered_signature_is_rejected() -> None:
    key, credential = await enrol()
    prompt = await METHOD.start(CONTEXT, [credential])
    answer = tampered(assertion_response(prompt.show["options"], key, ORIGIN))
    with pytest.raises(ResponseRejected, match="signature"):
        await METHOD.verify(CONTEXT, prompt.keep, [credential], {"credential": answer})


async def test_a_signature_by_another_private_key_is_rejected() -> None:
    key, credential = await enrol()
    forger, _ = await enrol()
    prompt = await METHOD.start(CONTEXT, [credential])
    forged = replace(forger, credential_id=key.credential_id)  # right id, wrong private key
    answer = assertion_response(prompt.show["options"], forged, ORIGIN)
    with pytest.raises(ResponseRejected, match="signature"):
        await METHOD.verify(CONTEXT, prompt.keep, [credential], {"credential": answer})


async def test_a_counter_that_goes_backwards_is_a_cloned_key() -> None:
    key, credential = await enrol()
    copy = key.clone()
    credential = await verify_with(key, [credential])  # the real key: 1
    credential = await verify_with(key, [credential])  # 2

    copy.sign_count = 1  # the copy signs with 2: not past what the server saw
    with pytest.raises(ResponseRejected) as caught:
        await verify_with(copy, [credential])
    assert caught.value.reason == CLONED_KEY
    copy.sign_count = 0  # and 1: behind it
    with pytest.raises(ResponseRejected, match="cloned"):
        await verify_with(copy, [credential])


async def test_a_key_that_never_counts_keeps_working() -> None:
    key, credential = await enrol(counts_signatures=False)
    for _ in range(3):
        credential = await verify_with(key, [credential])
    assert credential.state["sign_count"] == 0


async def test_a_passkey_must_name_the_user_handle_it_was_made_for() -> None:
    key, credential = await enrol()
    key.resident = True
    credential = await verify_with(key, [credential])  # its own handle: fine

    other = replace(key, user_handle=b"someone else's handle")
    with pytest.raises(ResponseRejected, match="user handle"):
        await verify_with(other, [credential])


@pytest.mark.parametrize("junk", ["", "null", "{}", '{"id": "AA"}', "x" * 5000])
async def test_malformed_assertions_are_rejected_not_crashed_on(junk: str) -> None:
    _, credential = await enrol()
    prompt = await METHOD.start(CONTEXT, [credential])
    with pytest.raises(ResponseRejected):
        await METHOD.verify(CONTEXT, prompt.keep, [credential], {"credential": junk})


# Through the service: challenges are used once, a cloned key is audited


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with sqlite_database(tmp_path) as url, harness_on(url) as running:
        yield running


async def test_a_replayed_assertion_is_refused_by_the_service(harness: Harness) -> None:
    holder = SecurityKeyHolder()
    session = await harness.password_session()
    draft = await harness.second_factor.begin_enrolment(session, "webauthn", NO_CLIENT)
    await harness.second_factor.finish_enrolment(
        session,
        "webauthn",
        draft.challenge_id,
        holder.enrolment_response(draft.show, harness),
        NO_CLIENT,
    )
    session = await harness.password_session()
    started = await harness.second_factor.start(session, "webauthn", NO_CLIENT)
    answer = holder.verification_response(started.show, harness)
    completion = await harness.second_factor.verify(
        session, "webauthn", started.challenge_id, answer, NO_CLIENT
    )
    assert completion.session.level is Level.SIGNED_IN

    with pytest.raises(SecondFactorError) as same_challenge:
        await harness.second_factor.verify(
            session, "webauthn", started.challenge_id, answer, NO_CLIENT
        )
    assert same_challenge.value.message == EXPIRED_MESSAGE
    later = await harness.password_session()
    fresh = await harness.second_factor.start(later, "webauthn", NO_CLIENT)
    with pytest.raises(SecondFactorError) as new_challenge:
        await harness.second_factor.verify(later, "webauthn", fresh.challenge_id, answer, NO_CLIENT)
    assert new_challenge.value.message == FAILURE_MESSAGES[METHOD.kind]


async def test_a_cloned_key_is_refused_and_audited(harness: Harness) -> None:
    holder = SecurityKeyHolder()
    session = await harness.password_session()
    draft = await harness.second_factor.begin_enrolment(session, "webauthn", NO_CLIENT)
    await harness.second_factor.finish_enrolment(
        session,
        "webauthn",
        draft.challenge_id,
        holder.enrolment_response(draft.show, harness),
        NO_CLIENT,
    )
    assert holder.key is not None
    copy = holder.key.clone()
    for _ in range(2):  # the owner signs in twice: the server has seen 2
        session = await harness.password_session()
        started = await harness.second_factor.start(session, "webauthn", NO_CLIENT)
        answer = holder.verification_response(started.show, harness)
        await harness.second_factor.verify(
            session, "webauthn", started.challenge_id, answer, NO_CLIENT
        )

    session = await harness.password_session()
    started = await harness.second_factor.start(session, "webauthn", NO_CLIENT)
    copy.sign_count = 1
    origin = origin_of(harness.settings.public_url)
    forged = {"credential": assertion_response(started.show["options"], copy, origin)}
    with pytest.raises(SecondFactorError) as caught:
        await harness.second_factor.verify(
            session, "webauthn", started.challenge_id, forged, NO_CLIENT
        )

    assert caught.value.message == FAILURE_MESSAGES[METHOD.kind]  # the user sees the usual
    async with harness.gateway.db.begin() as db:
        rows = await AuditLog(db).recent(50, username=USERNAME)
    refused = [r for r in rows if r.kind == "second_factor" and r.outcome == "refused"]
    assert [r.detail.get("reason") for r in refused] == [CLONED_KEY]
    assert refused[0].detail.get("method") == "webauthn"


# Settings


def test_relying_party_and_origin_follow_the_public_url() -> None:
    method = WebAuthnMethod(WebAuthnSettings(), "https://SSO.example.com:443/twofa/")
    assert method.rp_id == "sso.example.com"
    assert method.origins == ["https://sso.example.com"]
    local = WebAuthnMethod(WebAuthnSettings(), "http://localhost:8123")
    assert (local.rp_id, local.origins) == ("localhost", ["http://localhost:8123"])


def test_a_parent_domain_and_several_origins_can_be_set() -> None:
    settings = load_settings(
        environ={
            "TWOFA_WEBAUTHN__RP_ID": "example.com",
            "TWOFA_WEBAUTHN__ORIGINS": "https://sso.example.com, https://login.example.com",
        },
        mode="dev",
    )
    method = WebAuthnMethod(settings.webauthn, settings.public_url)
    assert method.rp_id == "example.com"
    assert method.origins == ["https://sso.example.com", "https://login.example.com"]


def test_an_origin_outside_the_relying_party_is_a_configuration_error() -> None:
    settings = WebAuthnSettings(rp_id="example.com", origins=("https://example.org",))
    with pytest.raises(ConfigurationError, match="not on the relying party"):
        WebAuthnMethod(settings, "https://sso.example.com")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TWOFA_WEBAUTHN__RP_ID", "https://example.com"),
        ("TWOFA_WEBAUTHN__RP_ID", "example.com:443"),
        ("TWOFA_WEBAUTHN__ORIGINS", "sso.example.com"),
        ("TWOFA_WEBAUTHN__ORIGINS", "https://sso.example.com/path"),
        ("TWOFA_WEBAUTHN__RP_NAME", ""),
        ("TWOFA_WEBAUTHN__SOMETHING", "x"),
    ],
)
def test_malformed_webauthn_settings_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match="webauthn"):
        load_settings(environ={key: value}, mode="dev")

"""A software security key, and the browser around it: it reads the options a page hands to
`navigator.credentials.create/get`, makes an EC P-256 key, and answers exactly as a browser
would (clientDataJSON, authenticatorData, "none" attestation, ES256 signatures, base64url
JSON as py_webauthn expects it). Written on `cryptography` and `cbor2` only, not on the
library the gateway verifies with, so it cannot share that library's mistakes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from html import unescape
from typing import Any, Protocol
from urllib.parse import urlsplit

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from twofa.config import Settings
from twofa.methods.webauthn import origin_of

FLAG_USER_PRESENT = 0x01
FLAG_ATTESTED_CREDENTIAL = 0x40
ES256 = -7
NO_AAGUID = bytes(16)  # what "none" attestation reports


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftwareKey:
    """What the key remembers of one credential. `counts_signatures=False` is a passkey that
    reports 0 forever; `resident` keys return the user handle when they sign."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0
    counts_signatures: bool = True
    resident: bool = False

    def clone(self) -> SoftwareKey:
        """A copy of the key with its own counter (what an attacker's copy would be)."""
        return replace(self)


def _client_data(kind: str, challenge: str, origin: str) -> bytes:
    # Browsers write exactly these members, in this order, with no spaces.
    return json.dumps(
        {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False},
        separators=(",", ":"),
    ).encode()


def _cose_public_key(private_key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = private_key.public_key().public_numbers()
    return cbor2.dumps(
        {
            1: 2,  # kty: EC2
            3: ES256,  # alg
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


class KeyAlreadyRegistered(Exception):
    """The browser's InvalidStateError: the options exclude a credential this key holds."""


def registration_response(
    show_options_json: str,
    origin: str,
    rp_id: str,
    *,
    counts_signatures: bool = True,
    holding: SoftwareKey | None = None,
    honour_exclusions: bool = True,
) -> tuple[str, SoftwareKey]:
    """What `navigator.credentials.create` gives the page for these options, as JSON, and the
    key that was made. `rp_id` is the site the browser is on (it checks the options name it).
    `holding`: the credential this key made before, sent again (a browser that ignores
    `excludeCredentials`, with `honour_exclusions=False`); a browser that honours them
    raises `KeyAlreadyRegistered` when the options exclude it."""
    options = json.loads(show_options_json)
    assert options["rp"].get("id", rp_id) == rp_id, "the browser refuses another site's rp id"
    assert any(p["alg"] == ES256 for p in options["pubKeyCredParams"]), "ES256 not accepted"
    excluded = {item["id"] for item in options.get("excludeCredentials") or ()}
    if holding is not None:
        if honour_exclusions and b64url(holding.credential_id) in excluded:
            raise KeyAlreadyRegistered(b64url(holding.credential_id))
        key = replace(holding, user_handle=from_b64url(options["user"]["id"]))
    else:
        key = SoftwareKey(
            credential_id=secrets.token_bytes(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp_id,
            user_handle=from_b64url(options["user"]["id"]),
            counts_signatures=counts_signatures,
        )
    attested = (
        NO_AAGUID
        + struct.pack(">H", len(key.credential_id))
        + key.credential_id
        + _cose_public_key(key.private_key)
    )
    auth_data = (
        hashlib.sha256(rp_id.encode()).digest()
        + bytes([FLAG_USER_PRESENT | FLAG_ATTESTED_CREDENTIAL])
        + struct.pack(">I", key.sign_count)
        + attested
    )
    attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
    client_data = _client_data("webauthn.create", options["challenge"], origin)
    credential = {
        "id": b64url(key.credential_id),
        "rawId": b64url(key.credential_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "response": {
            "clientDataJSON": b64url(client_data),
            "attestationObject": b64url(attestation),
            "transports": ["usb", "nfc"],
        },
        "clientExtensionResults": {},
    }
    return json.dumps(credential), key


def assertion_response(
    show_options_json: str, authenticator_state: SoftwareKey, origin: str
) -> str:
    """What `navigator.credentials.get` gives the page for these options, signed by the key
    (its counter moves on first, as a real key's does)."""
    key = authenticator_state
    options = json.loads(show_options_json)
    allowed = [item["id"] for item in options.get("allowCredentials", [])]
    assert not allowed or b64url(key.credential_id) in allowed, "the key is not asked for"
    if key.counts_signatures:
        key.sign_count += 1
    auth_data = (
        hashlib.sha256(key.rp_id.encode()).digest()
        + bytes([FLAG_USER_PRESENT])
        + struct.pack(">I", key.sign_count)
    )
    client_data = _client_data("webauthn.get", options["challenge"], origin)
    signature = key.private_key.sign(
        auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
    )
    credential = {
        "id": b64url(key.credential_id),
        "rawId": b64url(key.credential_id),
        "type": "public-key",
        "authenticatorAttachment": "cross-platform",
        "response": {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
            "userHandle": b64url(key.user_handle) if key.resident else None,
        },
        "clientExtensionResults": {},
    }
    return json.dumps(credential)


def tampered(credential_json: str) -> str:
    """The same assertion with one bit of its signature flipped."""
    credential = json.loads(credential_json)
    signature = bytearray(from_b64url(credential["response"]["signature"]))
    signature[-1] ^= 0x01
    credential["response"]["signature"] = b64url(bytes(signature))
    return json.dumps(credential)


def options_on_page(html: str) -> str:
    """The options JSON the page hands to its script (`data-options` on #webauthn-flow)."""
    found = re.search(r'id="webauthn-flow"[^>]*\sdata-options="([^"]*)"', html)
    assert found, "no WebAuthn options on the page"
    return unescape(found.group(1))


def site_of(public_url: str) -> tuple[str, str]:
    """(origin, rp id) of a browser on the gateway's public address."""
    return origin_of(public_url), urlsplit(public_url).hostname or ""


class _HasSettings(Protocol):
    settings: Settings


class SecurityKeyHolder:
    """The user's side for the contract suite: one key, registered then used."""

    code = "webauthn"

    def __init__(self) -> None:
        self.key: SoftwareKey | None = None

    def enrolment_response(self, show: Mapping[str, Any], harness: _HasSettings) -> dict[str, str]:
        origin, rp_id = site_of(harness.settings.public_url)
        credential, self.key = registration_response(str(show["options"]), origin, rp_id)
        return {"credential": credential, "name": "Contract key"}

    def verification_response(
        self, show: Mapping[str, Any], harness: _HasSettings
    ) -> dict[str, str]:
        assert self.key is not None, "no key registered yet"
        origin, _ = site_of(harness.settings.public_url)
        return {"credential": assertion_response(str(show["options"]), self.key, origin)}

    def wrong_response(self, show: Mapping[str, Any], harness: _HasSettings) -> dict[str, str]:
        return {"credential": tampered(self.verification_response(show, harness)["credential"])}

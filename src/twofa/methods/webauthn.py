"""Security keys and passkeys (WebAuthn) as a second factor, verified with py_webauthn: the
options the page hands to the browser, and the checks of what the browser sends back
(challenge, origin, relying party, signature, and the key's signature counter). No storage.

A key is kept as its credential id, COSE public key, signature counter and transports. A
counter that does not move forward means two devices hold the same key (a clone) and is
refused; keys that never count (most passkeys) report 0 every time and are accepted.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from ipaddress import ip_address
from typing import Any, Final
from urllib.parse import urlsplit

from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.parse_authentication_credential_json import (
    parse_authentication_credential_json,
)
from webauthn.helpers.parse_registration_credential_json import (
    parse_registration_credential_json,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from twofa.config import WebAuthnSettings
from twofa.errors import ConfigurationError
from twofa.methods.base import (
    Draft,
    EnrolmentRefused,
    MethodContext,
    MethodKind,
    NewCredential,
    Prompt,
    ResponseRejected,
    StoredCredential,
    Verified,
    already_registered,
)

CODE = "webauthn"
DEFAULT_NAME: Final = "Security key"
MAX_NAME: Final = 60  # as long as My 2FA lets a name be
BROWSER_TIMEOUT_MS: Final = 120_000  # a hint to the browser; the server's challenge rules
USER_HANDLE_BYTES: Final = 32
# Anything a hostile or broken browser can make the parsers raise; all of it means "not proven".
MALFORMED: Final = (WebAuthnException, ValueError, TypeError, KeyError, IndexError)
CLONED_KEY: Final = "sign counter went backwards: possible cloned key"

log = logging.getLogger(__name__)


def origin_of(url: str) -> str:
    """`https://sso.example.com/twofa/` → `https://sso.example.com`, as a browser writes an
    origin (lower case, no default port)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    default_port = {"http": 80, "https": 443}.get(scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default_port else ""
    return f"{scheme}://{host}{port}"


def _is_ip_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _host_belongs_to(host: str, rp_id: str) -> bool:
    return host == rp_id or host.endswith("." + rp_id)


class WebAuthnMethod:
    """Security keys (YubiKey, Titan …) and passkeys (a phone, Touch ID, Windows Hello) after
    the password: the key only has to be present (touched), not to check a PIN, and the server
    names the keys it accepts, so they need not store anything for this site."""

    code = CODE
    title = "Security key or passkey"
    kind = MethodKind.WEBAUTHN
    many_per_user = True
    checks_slowly = False
    challenge_seconds = 300

    def __init__(self, settings: WebAuthnSettings, public_url: str) -> None:
        self.rp_id = settings.rp_id or (urlsplit(public_url).hostname or "").lower()
        self.rp_name = settings.rp_name
        self.origins = [origin_of(origin) for origin in settings.origins or (public_url,)]
        for origin in self.origins:
            if not _host_belongs_to(urlsplit(origin).hostname or "", self.rp_id):
                raise ConfigurationError(
                    f"webauthn: origin {origin} is not on the relying party {self.rp_id!r}; "
                    "set webauthn.rp_id to its domain"
                )

    async def begin_enrolment(
        self, context: MethodContext, enrolled: Sequence[StoredCredential] = ()
    ) -> Draft:
        if _is_ip_address(self.rp_id):  # said when someone tries, not at every start-up
            log.warning(
                "webauthn: the relying party is the IP address %s; browsers refuse security "
                "keys there. Give public_url a host name (http://localhost works for a trial).",
                self.rp_id,
            )
        # A fresh random user handle per key: it says nothing about the user, and a second
        # passkey made on the same device cannot overwrite the first one (authenticators keep
        # one discoverable credential per site and user handle).
        user_handle = secrets.token_bytes(USER_HANDLE_BYTES)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_name,
            user_id=user_handle,
            user_name=context.user.username,
            user_display_name=context.user.display_name or context.user.username,
            timeout=BROWSER_TIMEOUT_MS,
            # The browser refuses to make a second credential on a key it already holds
            # one of these on (InvalidStateError), so one key is never registered twice.
            exclude_credentials=[d for c in enrolled if (d := _descriptor(c)) is not None],
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.DISCOURAGED,
            ),
        )
        return Draft(
            show={"options": options_to_json(options)},
            keep={
                "challenge": bytes_to_base64url(options.challenge),
                "user_handle": bytes_to_base64url(user_handle),
            },
        )

    async def finish_enrolment(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        secret: str | None,
        response: Mapping[str, str],
        enrolled: Sequence[StoredCredential] = (),
    ) -> NewCredential:
        name = " ".join(response.get("name", "").split()) or DEFAULT_NAME
        if len(name) > MAX_NAME:
            raise EnrolmentRefused(f"Give the key a shorter name (at most {MAX_NAME} characters).")
        try:
            challenge = base64url_to_bytes(str(keep["challenge"]))
            credential = parse_registration_credential_json(response.get("credential", ""))
            registered = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                require_user_verification=False,
            )
        except MALFORMED as exc:
            raise ResponseRejected(f"registration not verified: {exc}") from exc
        credential_id = bytes_to_base64url(registered.credential_id)
        # A browser that ignored the excluded keys, or another tab that registered this key
        # since this page was opened: the key is there already. (A key registered to another
        # user, or by an enrolment racing this one, is refused by the store: `unique_id`.)
        if any(c.state.get("credential_id") == credential_id for c in enrolled):
            raise EnrolmentRefused(already_registered(self.title))
        return NewCredential(
            label=name,
            state={
                "credential_id": credential_id,
                "public_key": bytes_to_base64url(registered.credential_public_key),
                "sign_count": registered.sign_count,
                "transports": _transports_of(credential),
                "aaguid": registered.aaguid,
                "user_handle": str(keep.get("user_handle", "")),
                "backed_up": registered.credential_backed_up,
            },
            unique_id=credential_id,
        )

    async def start(
        self, context: MethodContext, credentials: Sequence[StoredCredential]
    ) -> Prompt:
        options = generate_authentication_options(
            rp_id=self.rp_id,
            timeout=BROWSER_TIMEOUT_MS,
            allow_credentials=[d for c in credentials if (d := _descriptor(c)) is not None],
            user_verification=UserVerificationRequirement.DISCOURAGED,
        )
        return Prompt(
            show={"options": options_to_json(options)},
            keep={"challenge": bytes_to_base64url(options.challenge)},
        )

    async def verify(
        self,
        context: MethodContext,
        keep: Mapping[str, Any],
        credentials: Sequence[StoredCredential],
        response: Mapping[str, str],
    ) -> Verified:
        try:
            assertion = parse_authentication_credential_json(response.get("credential", ""))
        except MALFORMED as exc:
            raise ResponseRejected(f"malformed assertion: {exc}") from exc
        stored = next(
            (c for c in credentials if c.state.get("credential_id") == assertion.id), None
        )
        if stored is None:
            raise ResponseRejected("unknown credential id")
        known_count = int(stored.state.get("sign_count", 0))
        try:
            checked = verify_authentication_response(
                credential=assertion,
                expected_challenge=base64url_to_bytes(str(keep["challenge"])),
                expected_rp_id=self.rp_id,
                expected_origin=self.origins,
                credential_public_key=base64url_to_bytes(str(stored.state["public_key"])),
                # The counter is compared below, after the signature, so that the audit log
                # can tell a cloned key from a bad signature (the library says neither).
                credential_current_sign_count=0,
                require_user_verification=False,
            )
        except MALFORMED as exc:
            raise ResponseRejected(f"assertion not verified: {exc}") from exc
        if known_count > 0 and checked.new_sign_count <= known_count:
            raise ResponseRejected(CLONED_KEY)
        _check_user_handle(assertion, stored)
        return Verified(stored.id, state={**stored.state, "sign_count": checked.new_sign_count})


def _transports_of(credential: RegistrationCredential) -> list[str]:
    return [transport.value for transport in credential.response.transports or ()]


def _descriptor(credential: StoredCredential) -> PublicKeyCredentialDescriptor | None:
    """The key as the browser must be told of it; None for a damaged record."""
    raw_id = credential.state.get("credential_id")
    if not isinstance(raw_id, str):
        return None
    known = {transport.value for transport in AuthenticatorTransport}
    transports = [
        AuthenticatorTransport(name)
        for name in credential.state.get("transports") or ()
        if name in known
    ]
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(raw_id), transports=transports or None
    )


def _check_user_handle(assertion: AuthenticationCredential, stored: StoredCredential) -> None:
    """A passkey names the user it was made for; it must be the handle made at set-up."""
    returned = assertion.response.user_handle
    expected = stored.state.get("user_handle")
    if returned is None or not expected:
        return  # security keys asked by credential id return no handle
    if not secrets.compare_digest(bytes_to_base64url(returned), str(expected)):
        raise ResponseRejected("user handle does not match the key's")

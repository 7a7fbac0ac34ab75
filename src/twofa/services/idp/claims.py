"""What twofa tells an application about a user: the claims of the ID token and of userinfo,
by the scopes asked for, and the authentication methods (RFC 8176 `amr`) of the sign-in."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

# RFC 8176 values for twofa's methods; Duo Push proves a key held on the phone ("swk").
METHOD_AMR: Final = {
    "totp": "otp",
    "email_otp": "otp",
    "backup_codes": "otp",
    "webauthn": "hwk",
    "security_questions": "kba",
    "duo_push": "swk",
}
ACR_MFA: Final = "urn:twofa:acr:mfa"
ACR_PASSWORD: Final = "urn:twofa:acr:pwd"  # noqa: S105 (an acr value, not a secret)
SCOPES: Final = ("openid", "profile", "email", "groups")
CLAIMS: Final = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "acr", "azp",
    "preferred_username", "name", "email", "email_verified", "groups", "sid",
)  # fmt: skip
# Back-channel logout's event (OpenID Connect Back-Channel Logout 1.0 §2.4).
BACKCHANNEL_LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"
_SID_LABEL: Final = b"twofa oidc sid v1\x00"


def amr_of(second_factor: bool, method: str | None) -> list[str]:
    """`pwd`, and with a second factor `mfa` and the method's own value when it is known (a
    remembered device stands for a second factor passed earlier, by a method not recorded)."""
    if not second_factor:
        return ["pwd"]
    amr = ["pwd", "mfa"]
    if method is not None and method in METHOD_AMR:
        amr.append(METHOD_AMR[method])
    return amr


def acr_of(amr: Sequence[str]) -> str:
    return ACR_MFA if "mfa" in amr else ACR_PASSWORD


@dataclass(frozen=True)
class UserFacts:
    subject: str
    username: str
    display_name: str
    email: str
    groups: tuple[str, ...]


def user_claims(user: UserFacts, scopes: Sequence[str]) -> dict[str, Any]:
    """The claims about the user that `scopes` ask for (OIDC Core §5.4). An e-mail address
    is never claimed verified: twofa does not check that a user owns it."""
    claims: dict[str, Any] = {"sub": user.subject, "preferred_username": user.username}
    if "profile" in scopes:
        claims["name"] = user.display_name or user.username
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = False
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
    return claims


def session_sid(session_id: str) -> str:
    """The `sid` relying parties know a twofa session by (Back-Channel Logout §2.1): opaque,
    stable for the session's life, never the session id itself (the key of its row, which
    shows in logs and the console). A one-way hash suffices, with no key: the session id is
    the SHA-256 of a 256-bit random cookie, so there is nothing to guess from `sid`, and a
    keyed hash would change every `sid` when the gateway's secret keys are rotated, leaving
    relying parties unable to match the logout of a session signed in before."""
    digest = hashlib.sha256(_SID_LABEL + session_id.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def logout_claims(
    *, issuer: str, client_id: str, subject: str, sid: str, jti: str, now: int, lifetime_s: int
) -> dict[str, Any]:
    """A logout token's claims (Back-Channel Logout §2.4): who issued it, for which client,
    which user and session, the logout event, and never a nonce (§2.4: that would let it be
    mistaken for an ID token)."""
    return {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + lifetime_s,
        "jti": jti,
        "sub": subject,
        "sid": sid,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

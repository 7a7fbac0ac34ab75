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
    "preferred_username", "name", "email", "email_verified", "groups",
)  # fmt: skip


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


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

"""pysaml2's IdP, built from twofa's database: one `saml2.server.Server` per service provider
(its metadata only, so a request can be checked against no other provider's certificates),
signing with the key in use, kept while neither the provider's metadata nor the keys change.
Also the IdP's own metadata, the check of an HTTP-Redirect signature over the query as it was
sent, and what an assertion says about the user."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import (
    NAME_FORMAT_URI,
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_UNSPECIFIED,
)
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from twofa.services.idp.saml.errors import InvalidSamlRequest
from twofa.services.idp.saml.keys import PublishedKeys

XMLSEC: Final = "/usr/bin/xmlsec1"
METADATA_PATH: Final = "/saml/metadata"
SSO_PATH: Final = "/saml/sso"
SLO_PATH: Final = "/saml/slo"
ASSERTION_LIFETIME_MINUTES: Final = 5
CLOCK_SKEW_S: Final = 60
# AuthnContextClassRef: a password over TLS, or that and a second factor (REFEDS MFA).
PASSWORD_CLASS: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"  # noqa: S105
MFA_CLASS: Final = "https://refeds.org/profile/mfa"
# The attributes of an assertion, by their pysaml2 (LDAP) names; sent by their URI (OID) name
# with these friendly names: uid = urn:oid:0.9.2342.19200300.100.1.1, displayName =
# urn:oid:2.16.840.1.113730.3.1.241, mail = urn:oid:0.9.2342.19200300.100.1.3, isMemberOf =
# urn:oid:1.3.6.1.4.1.5923.1.5.1.1 (one value per group).
ATTRIBUTE_OIDS: Final = {
    "uid": "urn:oid:0.9.2342.19200300.100.1.1",
    "displayName": "urn:oid:2.16.840.1.113730.3.1.241",
    "mail": "urn:oid:0.9.2342.19200300.100.1.3",
    "isMemberOf": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
}
# Redirect-binding signature algorithms twofa accepts (no SHA-1).
_REDIRECT_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
}
_CACHED_SERVERS: Final = 64
# A SAML request is a few kilobytes; pysaml2 inflates without a limit (a deflate bomb).
MAX_ENCODED_MESSAGE: Final = 100_000
MAX_INFLATED_MESSAGE: Final = 200_000


def idp_entity_id(public_url: str) -> str:
    return public_url.rstrip("/") + METADATA_PATH


def _config(
    public_url: str, keys: PublishedKeys, sp_metadata: str | None, post_signed: bool
) -> IdPConfig:
    base = public_url.rstrip("/")
    settings: dict[str, Any] = {
        "entityid": idp_entity_id(public_url),
        "xmlsec_binary": XMLSEC,
        "key_file": keys.signing.key_file,
        "cert_file": keys.signing.cert_file,
        "additional_cert_files": list(keys.cert_files[1:]),
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "accepted_time_diff": CLOCK_SKEW_S,
        "service": {
            "idp": {
                "name": "twofa",
                "endpoints": {
                    "single_sign_on_service": [
                        (base + SSO_PATH, BINDING_HTTP_REDIRECT),
                        (base + SSO_PATH, BINDING_HTTP_POST),
                    ],
                    "single_logout_service": [(base + SLO_PATH, BINDING_HTTP_REDIRECT)],
                },
                "name_id_format": [
                    NAMEID_FORMAT_PERSISTENT,
                    NAMEID_FORMAT_EMAILADDRESS,
                    NAMEID_FORMAT_UNSPECIFIED,
                ],
                "want_authn_requests_signed": post_signed,
                "sign_response": True,
                "sign_assertion": True,
                "policy": {
                    "default": {
                        "lifetime": {"minutes": ASSERTION_LIFETIME_MINUTES},
                        "name_form": NAME_FORMAT_URI,
                        "attribute_restrictions": None,
                    }
                },
            }
        },
    }
    if sp_metadata is not None:
        settings["metadata"] = {"inline": [sp_metadata]}
    config = IdPConfig()
    config.load(settings)
    return config


class ServerCache:
    """pysaml2 servers by what they were built from; the oldest goes first past the limit."""

    def __init__(self, public_url: str) -> None:
        self._public_url = public_url
        self._servers: OrderedDict[tuple[str, ...], Server] = OrderedDict()

    def server(self, keys: PublishedKeys, sp_metadata: str, post_signed: bool) -> Server:
        digest = hashlib.sha256(sp_metadata.encode()).hexdigest()
        key = (digest, str(post_signed), *keys.cert_files)
        server = self._servers.get(key)
        if server is None:
            server = Server(config=_config(self._public_url, keys, sp_metadata, post_signed))
            self._servers[key] = server
            while len(self._servers) > _CACHED_SERVERS:
                self._servers.popitem(last=False)
        self._servers.move_to_end(key)
        return server

    def metadata(self, keys: PublishedKeys) -> str:
        """The IdP's metadata, unsigned: it is fetched over TLS from the URL the admin gives
        the provider, and a signature by the very key it publishes would prove nothing more."""
        descriptor = entity_descriptor(_config(self._public_url, keys, None, False))
        descriptor.extensions = None  # pysaml2 lists every algorithm xmlsec has, MD5 too
        return descriptor.to_string().decode()  # type: ignore[no-any-return]


_SIGNED_NAMES: Final = frozenset(
    {"SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature"}
)


def _raw_parameters(raw_query: str) -> dict[str, str]:
    """Each parameter of the query as it was sent (still URL-encoded); one the signature
    covers may come once only."""
    found: dict[str, str] = {}
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if name in found and name in _SIGNED_NAMES:  # checked over one, read from another
            raise InvalidSamlRequest(f"{name} is repeated in the query")
        found.setdefault(name, value)
    return found


def check_redirect_signature(raw_query: str, certificates: Sequence[str]) -> None:
    """SAML Bindings §3.4.4.1: the signature covers SAMLRequest (or SAMLResponse), RelayState
    and SigAlg exactly as they were URL-encoded in the query; one of the provider's
    certificates must verify it."""
    sent = _raw_parameters(raw_query)
    message = "SAMLRequest" if "SAMLRequest" in sent else "SAMLResponse"
    sigalg = urllib.parse.unquote_plus(sent.get("SigAlg", ""))
    hash_kind = _REDIRECT_HASHES.get(sigalg)
    if hash_kind is None or "Signature" not in sent or message not in sent:
        raise InvalidSamlRequest(f"unsigned request, or signed with {sigalg!r}")
    names = [message, "RelayState", "SigAlg"] if "RelayState" in sent else [message, "SigAlg"]
    signed = "&".join(f"{name}={sent[name]}" for name in names).encode("ascii")
    try:
        signature = base64.b64decode(urllib.parse.unquote_plus(sent["Signature"]), validate=True)
    except ValueError:
        raise InvalidSamlRequest("the signature is not base64") from None
    for certificate in certificates:
        public_key = x509.load_der_x509_certificate(base64.b64decode(certificate)).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            continue
        try:
            public_key.verify(signature, signed, padding.PKCS1v15(), hash_kind())
        except InvalidSignature:
            continue
        return
    raise InvalidSamlRequest("the request's signature does not verify")


def check_message_size(encoded: str) -> None:
    """Refuses a message too long, or one that would inflate past the limit, before pysaml2
    decodes it (it inflates whatever it is given)."""
    if len(encoded) > MAX_ENCODED_MESSAGE:
        raise InvalidSamlRequest("the SAML message is too long")
    try:
        raw = base64.b64decode(encoded)
    except ValueError:
        raise InvalidSamlRequest("the SAML message is not base64") from None
    inflater = zlib.decompressobj(-15)
    try:
        inflater.decompress(raw, MAX_INFLATED_MESSAGE)
    except zlib.error:
        return  # not deflated (HTTP-POST): as long as it came, within the limit above
    if inflater.unconsumed_tail:
        raise InvalidSamlRequest("the SAML message inflates too far")


def identity_of(
    username: str, display_name: str, email: str, groups: Sequence[str]
) -> dict[str, list[str]]:
    """An attribute with no value is left out (a user in no group gets no isMemberOf)."""
    identity = {"uid": [username], "displayName": [display_name]}
    if email:
        identity["mail"] = [email]
    if groups:
        identity["isMemberOf"] = list(groups)
    return identity

"""What twofa takes from a service provider's metadata (and what it refuses), and the check of
an HTTP-Redirect signature over the query exactly as it was sent."""

from __future__ import annotations

import base64
import urllib.parse
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.apache import mellon_service_provider
from twofa.services.idp.saml.errors import InvalidSamlRequest, InvalidServiceProvider
from twofa.services.idp.saml.server import check_message_size, check_redirect_signature
from twofa.services.idp.saml.sp_metadata import parse_sp_metadata

SP = mellon_service_provider("wiki.example.test", 8443)
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def certificate_b64() -> str:
    der = x509.load_pem_x509_certificate(SP.certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    return base64.b64encode(der).decode()


def signed_query(saml_request: str, relay_state: str, sigalg: str = RSA_SHA256) -> str:
    """As lasso (mellon) builds it: each value URL-encoded, in the order the binding says."""
    key = serialization.load_pem_private_key(SP.key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signed = "&".join(
        f"{name}={urllib.parse.quote(value, safe='')}"
        for name, value in (
            ("SAMLRequest", saml_request),
            ("RelayState", relay_state),
            ("SigAlg", sigalg),
        )
    )
    signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signed}&Signature={urllib.parse.quote(base64.b64encode(signature).decode(), safe='')}"


def test_the_metadata_gives_the_entity_acs_logout_certificate_and_signing() -> None:
    parsed = parse_sp_metadata(SP.metadata())
    assert parsed.entity_id == SP.entity_id
    assert [e["location"] for e in parsed.acs_endpoints] == [SP.acs_url]
    assert parsed.acs_endpoints[0]["is_default"] is True
    assert [e["location"] for e in parsed.slo_endpoints] == [f"{SP.base}/logout"]
    assert parsed.signing_certificates == (certificate_b64(),)
    assert parsed.authn_requests_signed is True


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda xml: xml.replace("HTTP-POST", "HTTP-Artifact"), "no AssertionConsumerService"),
        (lambda xml: xml.replace("https://wiki", "http://wiki"), "must be an https URL"),
        (lambda xml: xml[:200], "cannot be read"),
        (lambda xml: xml.replace("SPSSODescriptor", "IDPSSODescriptor"), "no SPSSODescriptor"),
    ],
)
def test_unusable_metadata_is_refused_with_its_reason(edit: object, reason: str) -> None:
    with pytest.raises(InvalidServiceProvider, match=reason):
        parse_sp_metadata(edit(SP.metadata()))  # type: ignore[operator]


def test_a_redirect_signature_verifies_over_the_query_as_sent() -> None:
    check_redirect_signature(
        signed_query("fZJNb9swDIbv/RWG7o7l", "https://x/?a=b c"), [certificate_b64()]
    )


def test_a_changed_parameter_or_a_missing_signature_is_refused() -> None:
    query = signed_query("fZJNb9swDIbv/RWG7o7l", "/after")
    with pytest.raises(InvalidSamlRequest):
        check_redirect_signature(query.replace("%2Fafter", "%2Felsewhere"), [certificate_b64()])
    with pytest.raises(InvalidSamlRequest):
        check_redirect_signature(query.split("&Signature=")[0], [certificate_b64()])


def test_sha1_signatures_are_refused() -> None:
    sha1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    with pytest.raises(InvalidSamlRequest, match="signed with"):
        check_redirect_signature(signed_query("abc", "/", sigalg=sha1), [certificate_b64()])


def test_a_deflate_bomb_is_refused_before_it_is_inflated() -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflate.compress(b"<" + b"a" * 10_000_000) + deflate.flush()
    with pytest.raises(InvalidSamlRequest, match="inflates too far"):
        check_message_size(base64.b64encode(bomb).decode())
    with pytest.raises(InvalidSamlRequest, match="too long"):
        check_message_size("A" * 200_000)
    check_message_size(base64.b64encode(b"<AuthnRequest/>").decode())  # plain XML: fine

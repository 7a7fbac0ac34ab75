"""twofa as a SAML 2.0 identity provider, on pysaml2 with Debian's xmlsec1: service providers
registered from their metadata as applications of the one registry (registry), the IdP's
signing keys (keys), single sign-on (sso) and single logout (slo). The sign-in is twofa's own;
whether the session may sign in to the provider is services.idp.admission's to decide, as for
OpenID Connect.

Attributes of an assertion (NameFormat uri, FriendlyName in brackets):
urn:oid:0.9.2342.19200300.100.1.1 (uid) the username, urn:oid:2.16.840.1.113730.3.1.241
(displayName), urn:oid:0.9.2342.19200300.100.1.3 (mail, when the user has one) and
urn:oid:1.3.6.1.4.1.5923.1.5.1.1 (isMemberOf) one value per group. AuthnContextClassRef is
PasswordProtectedTransport after a password only, https://refeds.org/profile/mfa after a
second factor."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# pysaml2 7.5 imports cryptography's CFB mode, which cryptography deprecates when it is
# imported. twofa never uses it: signatures are RSA-SHA256 through xmlsec1. Left alone, the
# warning is one plain-text line on stderr in every process, which breaks a JSON log.
warnings.filterwarnings(
    "ignore", message="CFB has been moved", category=CryptographyDeprecationWarning
)

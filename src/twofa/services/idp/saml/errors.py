"""The SAML identity provider's errors. A request from a provider twofa does not know, or one
asking for a response at an address its metadata does not list, is shown to the browser as an
error page and never answered to that address: the address itself cannot be trusted. So are
unsigned, tampered, expired and replayed requests."""

from __future__ import annotations

from twofa.errors import Conflict, Invalid, NotFound, Refused, TwofaError

_PAGE = (
    "The application that sent you here is not registered with this sign-in service, or its "
    "sign-in request cannot be used. Nothing was signed in. Go back to the application and "
    "try again."
)


class UnsafeSamlRequest(TwofaError):
    """A request answered with an error page, never with a response to the provider."""

    @property
    def user_message(self) -> str | None:
        return _PAGE


class UnknownServiceProvider(UnsafeSamlRequest, NotFound):
    """No registered service provider has this entity id."""


class UnregisteredAssertionConsumer(UnsafeSamlRequest, Invalid):
    """The AssertionConsumerServiceURL (or index) is not one of the provider's metadata."""


class InvalidSamlRequest(UnsafeSamlRequest, Invalid):
    """Unparsable, unsigned where the provider signs, badly signed or tampered with."""


class ExpiredSamlRequest(UnsafeSamlRequest, Refused):
    """Issued too long ago (or too far in the future) to be answered."""


class ReplayedSamlRequest(UnsafeSamlRequest, Conflict):
    """An AuthnRequest ID already answered: a request is answered once."""


class InvalidServiceProvider(Invalid):
    """Metadata that cannot be used to register a service provider; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, {"metadata": message})


class ServiceProviderExists(Conflict):
    """A service provider with this entity id is registered already."""

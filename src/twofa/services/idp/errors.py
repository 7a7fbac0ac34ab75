"""The provider's errors. `OAuthError`s are answered to the relying party in the protocol's
own shape (RFC 6749 §5.2: a JSON body at the token endpoint, `error` on the redirect at the
authorization endpoint); `UnsafeAuthorizeRequest`s are answered to the browser with an error
page and never redirected, since the redirect URI itself cannot be trusted."""

from __future__ import annotations

from twofa.errors import Invalid, NotFound, Refused, TwofaError


class OAuthError(Refused):
    """An error a relying party is told, by its RFC 6749 / OpenID Connect code: its request
    is refused (web.oidc answers it in the protocol's shape)."""

    status = 400

    def __init__(self, code: str, description: str) -> None:
        self.code = code
        self.description = description
        super().__init__(f"{code}: {description}")


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2): 401 with a Basic challenge."""

    status = 401

    def __init__(self, description: str = "client authentication failed") -> None:
        super().__init__("invalid_client", description)


class InvalidGrant(OAuthError):
    def __init__(self, description: str) -> None:
        super().__init__("invalid_grant", description)


class InvalidToken(OAuthError):
    """A bearer token userinfo cannot accept (RFC 6750 §3.1)."""

    status = 401

    def __init__(self, description: str = "the access token is invalid or expired") -> None:
        super().__init__("invalid_token", description)


class UnsafeAuthorizeRequest(TwofaError):
    """An authorization request whose client or redirect URI is not registered: shown to
    the browser, never sent back to the redirect URI."""

    @property
    def user_message(self) -> str | None:
        return (
            "The application that sent you here is not registered with this sign-in service, "
            "or asked to return to an address it did not register. Nothing was signed in."
        )


class UnknownClient(UnsafeAuthorizeRequest, NotFound):
    pass


class UnregisteredRedirect(UnsafeAuthorizeRequest, Invalid):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnknownApplication(NotFound):
    """No application has this name or client id."""


class InvalidApplication(Invalid):
    """An application's settings that cannot be used; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message, {field: message})

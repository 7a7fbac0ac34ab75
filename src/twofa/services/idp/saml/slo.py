"""SAML single logout, provider-initiated over HTTP-Redirect (SAML Profiles §4.4): a
LogoutRequest from a registered provider, always signed, naming the user of the browser's twofa
session as the provider knows them, ends that session (the caller ends it: sessions are the web
layer's to clear) and is answered with a LogoutResponse, its query signed (RSA-SHA256), to the
provider's SingleLogoutService. twofa does not propagate the logout to other providers."""

from __future__ import annotations

from dataclasses import dataclass

from saml2 import BINDING_HTTP_REDIRECT
from saml2.entity import Entity
from saml2.samlp import logout_request_from_string
from saml2.xmldsig import SIG_RSA_SHA256

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.idp.saml.errors import InvalidSamlRequest, UnregisteredAssertionConsumer
from twofa.services.idp.saml.registry import ServiceProvider
from twofa.services.idp.saml.server import check_message_size, check_redirect_signature
from twofa.services.idp.saml.sso import SamlIdentityProvider, SignedMessage
from twofa.services.state import audit
from twofa.services.state.sessions import SessionView


@dataclass(frozen=True)
class LogoutAnswer:
    """Send the browser to `redirect_url` (the signed response), having ended its session
    when `end_session` (the request named this browser's user)."""

    redirect_url: str
    end_session: bool


class SingleLogout:
    def __init__(self, idp: SamlIdentityProvider, clock: Clock) -> None:
        self._idp = idp
        self._clock = clock

    async def logout(
        self, message: SignedMessage, session: SessionView | None, client: ClientInfo
    ) -> LogoutAnswer:
        check_message_size(message.saml_request)
        try:
            xml = Entity.unravel(message.saml_request, BINDING_HTTP_REDIRECT, "logout_request")
            sniffed = logout_request_from_string(xml)
        except Exception:  # every way a message can be unreadable is one answer
            raise InvalidSamlRequest("the LogoutRequest cannot be read") from None
        if sniffed is None:
            raise InvalidSamlRequest("not a LogoutRequest")
        provider = await self._idp.provider_of(sniffed.issuer.text if sniffed.issuer else None)
        # Always signed (SAML Profiles §4.4.4.1: the requester MUST authenticate itself): a
        # provider without a signing certificate has no single logout, else any page could
        # sign users out by a link.
        check_redirect_signature(message.raw_query, provider.signing_certificates)
        endpoints = [e for e in provider.slo_endpoints if e["binding"] == BINDING_HTTP_REDIRECT]
        if not endpoints:
            raise UnregisteredAssertionConsumer(f"{provider.entity_id} has no logout endpoint")
        destination = endpoints[0].get("response_location") or endpoints[0]["location"]
        server = await self._idp.server_for(provider)
        try:
            parsed = server.parse_logout_request(message.saml_request, BINDING_HTTP_REDIRECT)
        except Exception:  # invalid against the schema, not for us: refused alike
            raise InvalidSamlRequest(f"LogoutRequest from {provider.entity_id} refused") from None
        named = parsed.message.name_id
        ends = await self._names_session_user(provider, named.text if named else None, session)
        response = server.create_logout_response(parsed.message, [BINDING_HTTP_REDIRECT])
        sent = server.apply_binding(
            BINDING_HTTP_REDIRECT,
            str(response),
            destination,
            message.relay_state or "",
            response=True,
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        location = next(value for name, value in sent["headers"] if name == "Location")
        async with self._idp.db.begin() as db:
            audit.record(
                db, self._clock, "saml_slo", "signed_out" if ends else "nothing_to_end",
                client=client, application=provider.application.name,
                had_session=session is not None and session.user_id is not None,
            )  # fmt: skip
        return LogoutAnswer(location, end_session=ends)

    async def _names_session_user(
        self, provider: ServiceProvider, name_id: str | None, session: SessionView | None
    ) -> bool:
        """Whether the request's NameID is the one this provider knows the browser's user
        by: a signed request for another subject (the attacker's own, replayed in the
        victim's browser) ends nothing."""
        if session is None or session.user_id is None or not name_id:
            return False
        return await self._idp.name_id_value(provider, session.user_id) == name_id

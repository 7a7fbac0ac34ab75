"""SAML 2.0 single sign-on and single logout (SAML Profiles §4.1, §4.4): an AuthnRequest from a
registered service provider, over HTTP-Redirect or HTTP-POST, is checked (its issuer, its
signature where the provider signs, its age, its ID not answered before, its
AssertionConsumerService one of the provider's metadata), then the browser's session is
weighed by services.idp.admission, and the answer is a signed Response holding a signed
Assertion, posted by the browser to the provider's ACS. A LogoutRequest over HTTP-Redirect
ends twofa's session and is answered with a signed LogoutResponse."""

from __future__ import annotations

import asyncio
import base64
import calendar
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.entity import Entity
from saml2.saml import (
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_UNSPECIFIED,
    NameID,
)
from saml2.samlp import STATUS_NO_PASSIVE, authn_request_from_string
from saml2.server import Server
from saml2.time_util import str_to_time
from saml2.xmldsig import SIG_RSA_SHA256
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from twofa.clock import Clock
from twofa.domain.client import ClientInfo
from twofa.services.idp.admission import (
    AdmissionService,
    Admitted,
    AdmittedUser,
    InteractionNeeded,
    SecondFactorFirst,
    SignInFirst,
)
from twofa.services.idp.saml.errors import (
    ExpiredSamlRequest,
    InvalidSamlRequest,
    ReplayedSamlRequest,
    UnknownServiceProvider,
    UnregisteredAssertionConsumer,
)
from twofa.services.idp.saml.keys import SamlKeyService
from twofa.services.idp.saml.registry import ServiceProvider, ServiceProviderService
from twofa.services.idp.saml.server import (
    CLOCK_SKEW_S,
    MFA_CLASS,
    PASSWORD_CLASS,
    ServerCache,
    check_message_size,
    check_redirect_signature,
    identity_of,
    idp_entity_id,
)
from twofa.services.state.sessions import SessionView
from twofa.storage.repositories import Users
from twofa.storage.saml import SamlRequests, SamlSubjects

# How old an AuthnRequest may be when it is answered (a sign-in with a push takes a minute).
REQUEST_MAX_AGE: Final = timedelta(minutes=10)
SKEW: Final = timedelta(seconds=CLOCK_SKEW_S)


@dataclass(frozen=True)
class SignedMessage:
    """What the browser carries to the provider: a request as it was sent, or an answer."""

    binding: str  # BINDING_HTTP_REDIRECT | BINDING_HTTP_POST
    saml_request: str
    relay_state: str | None = None
    raw_query: str = ""  # the Redirect binding's query as sent: what its signature covers


@dataclass(frozen=True)
class PostToProvider:
    """A signed Response the browser posts to the provider's ACS (HTTP-POST binding)."""

    acs_url: str
    saml_response: str  # base64
    relay_state: str | None


@dataclass(frozen=True)
class _Checked:
    provider: ServiceProvider
    request_id: str
    acs_url: str
    force_authn: bool
    passive: bool
    first_seen_at: datetime


@dataclass(frozen=True)
class Pending:
    """What the browser must do first (sign in, pass a second factor) before coming back.
    `resume` is the query that brings back a request that came by HTTP-POST (kept
    server-side: a POSTed, signed request is too long for a sign-in's `next`); None when the
    request's own URL brings it back."""

    step: SignInFirst | SecondFactorFirst
    resume: str | None = None


SsoOutcome = PostToProvider | Pending


class SamlIdentityProvider:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        clock: Clock,
        keys: SamlKeyService,
        providers: ServiceProviderService,
        public_url: str,
    ) -> None:
        self._db = db
        self.db = db
        self._clock = clock
        self.keys = keys
        self.providers = providers
        self.entity_id = idp_entity_id(public_url)
        self._servers = ServerCache(public_url)
        self._admission = AdmissionService(db, clock)

    async def metadata(self) -> str:
        return self._servers.metadata(await self.keys.published())

    async def _server(self, provider: ServiceProvider, post_signed: bool) -> Server:
        keys = await self.keys.published()
        return self._servers.server(keys, provider.metadata_xml, post_signed)

    async def server_for(self, provider: ServiceProvider) -> Server:
        """pysaml2's IdP for `provider`, embedded signatures not demanded."""
        return await self._server(provider, False)

    async def provider_of(self, issuer: str | None) -> ServiceProvider:
        provider = None if not issuer else await self.providers.by_entity_id(issuer)
        if provider is None:
            raise UnknownServiceProvider(f"request from unregistered service provider {issuer!r}")
        return provider

    async def sso(
        self, message: SignedMessage, session: SessionView | None, client: ClientInfo
    ) -> SsoOutcome:
        """What the SSO service answers: a response to post, or what the browser must do
        first (sign in, pass a second factor) before coming back with the same request."""
        checked = await self._checked(message)
        if checked.force_authn:
            signed_in_after: datetime | None = checked.first_seen_at
        else:
            signed_in_after = None
        app = checked.provider.application
        try:
            admission = await self._admission.decide(
                app, session, kind="saml_sso", client=client,
                signed_in_after=signed_in_after, passive=checked.passive,
            )  # fmt: skip
        except InteractionNeeded:
            return await self._no_passive(checked, message.relay_state)
        if not isinstance(admission, Admitted):
            resume = None
            if message.binding == BINDING_HTTP_POST:
                resume = urllib.parse.urlencode(
                    {"resume": checked.provider.entity_id, "id": checked.request_id}
                )
            return Pending(admission, resume)
        async with self._db.begin() as db:
            answered = await SamlRequests(db).answer(
                checked.provider.id, checked.request_id, self._clock.now()
            )
        if not answered:
            raise ReplayedSamlRequest(f"AuthnRequest {checked.request_id!r} was answered already")
        response = await self._response(
            checked.provider, admission.user, checked.request_id, checked.acs_url
        )
        return PostToProvider(checked.acs_url, response, message.relay_state)

    async def resume(
        self, entity_id: str, request_id: str, session: SessionView | None, client: ClientInfo
    ) -> SsoOutcome:
        """A request that came by HTTP-POST, as it came, once the browser is back from the
        sign-in: checked again from the start (signature, age, not answered yet)."""
        provider = await self.provider_of(entity_id)
        async with self._db() as db:
            row = await SamlRequests(db).posted(provider.id, request_id)
        if row is None or row.posted_message is None:
            raise InvalidSamlRequest(f"no request {request_id!r} from {entity_id!r} to resume")
        message = SignedMessage(BINDING_HTTP_POST, row.posted_message, row.relay_state)
        return await self.sso(message, session, client)

    async def idp_initiated(
        self,
        entity_id: str,
        relay_state: str | None,
        session: SessionView | None,
        client: ClientInfo,
    ) -> SsoOutcome:
        """An unsolicited Response (SAML Profiles §4.1.5) to the provider's default ACS."""
        provider = await self.provider_of(entity_id)
        admission = await self._admission.decide(
            provider.application, session, kind="saml_idp_initiated", client=client
        )
        if not isinstance(admission, Admitted):
            return Pending(admission)
        acs_url = _default_acs(provider)
        response = await self._response(provider, admission.user, None, acs_url)
        return PostToProvider(acs_url, response, relay_state)

    async def _checked(self, message: SignedMessage) -> _Checked:
        check_message_size(message.saml_request)
        try:
            xml = Entity.unravel(message.saml_request, message.binding, "authn_request")
            sniffed = authn_request_from_string(xml)
        except Exception:  # every way a message can be unreadable is one answer
            raise InvalidSamlRequest("the AuthnRequest cannot be read") from None
        if sniffed is None:
            raise InvalidSamlRequest("not an AuthnRequest")
        provider = await self.provider_of(sniffed.issuer.text if sniffed.issuer else None)
        redirect = message.binding == BINDING_HTTP_REDIRECT
        if redirect and (provider.authn_requests_signed or "Signature=" in message.raw_query):
            check_redirect_signature(message.raw_query, provider.signing_certificates)
        server = await self._server(provider, not redirect and provider.authn_requests_signed)
        try:
            parsed = await asyncio.to_thread(
                server.parse_authn_request, message.saml_request, message.binding
            )
        except Exception:  # unsigned, tampered, invalid against the schema: refused alike
            raise InvalidSamlRequest(f"AuthnRequest from {provider.entity_id} refused") from None
        request = parsed.message
        issued_at = _instant(request.issue_instant)
        now = self._clock.now()
        if issued_at > now + SKEW or now - issued_at > REQUEST_MAX_AGE:
            raise ExpiredSamlRequest(f"AuthnRequest {request.id!r} was issued at {issued_at}")
        acs_url = _acs_of(provider, request)
        async with self._db.begin() as db:
            requests = SamlRequests(db)
            posted = None if redirect else (message.saml_request, message.relay_state)
            row = await requests.first_seen(
                provider.id, request.id, now, issued_at + REQUEST_MAX_AGE + SKEW, posted
            )
            if row.answered_at is not None:
                raise ReplayedSamlRequest(f"AuthnRequest {request.id!r} was answered already")
            await requests.remove_expired(now)
            first_seen_at = row.first_seen_at
        return _Checked(
            provider=provider,
            request_id=request.id,
            acs_url=acs_url,
            force_authn=str(request.force_authn).lower() in ("true", "1"),
            passive=str(request.is_passive).lower() in ("true", "1"),
            first_seen_at=first_seen_at,
        )

    async def name_id_value(self, provider: ServiceProvider, user_id: int) -> str | None:
        """The NameID this provider knows the user by (as `_name_id` gives it); None when
        the user is gone."""
        async with self._db.begin() as db:
            user = await Users(db).by_id(user_id)
            if user is None:
                return None
            if provider.name_id_format != "persistent":
                return user.username
            candidate = secrets.token_urlsafe(24)
            return await SamlSubjects(db).name_id_of(
                provider.id, user_id, candidate, self._clock.now()
            )

    async def _name_id(self, provider: ServiceProvider, user: AdmittedUser) -> NameID:
        if provider.name_id_format == "persistent":
            async with self._db.begin() as db:
                value = await SamlSubjects(db).name_id_of(
                    provider.id, user.user_id, secrets.token_urlsafe(24), self._clock.now()
                )
            return NameID(
                format=NAMEID_FORMAT_PERSISTENT,
                text=value,
                name_qualifier=self.entity_id,
                sp_name_qualifier=provider.entity_id,
            )
        is_email = "@" in user.username
        name_format = NAMEID_FORMAT_EMAILADDRESS if is_email else NAMEID_FORMAT_UNSPECIFIED
        return NameID(format=name_format, text=user.username)

    async def _response(
        self,
        provider: ServiceProvider,
        user: AdmittedUser,
        in_response_to: str | None,
        acs_url: str,
    ) -> str:
        server = await self._server(provider, False)
        name_id = await self._name_id(provider, user)
        # xmlsec1 signs in a subprocess: off the event loop.
        response = await asyncio.to_thread(
            server.create_authn_response,
            identity_of(user.username, user.display_name, user.email, user.groups),
            in_response_to,
            acs_url,
            provider.entity_id,
            name_id=name_id,
            authn={
                "class_ref": MFA_CLASS if user.second_factor else PASSWORD_CLASS,
                "authn_instant": int(user.auth_time.timestamp()),
            },
            sign_response=True,
            sign_assertion=True,
            sign_alg=SIG_RSA_SHA256,
            digest_alg="http://www.w3.org/2001/04/xmlenc#sha256",
        )
        return base64.b64encode(str(response).encode()).decode("ascii")

    async def _no_passive(self, checked: _Checked, relay_state: str | None) -> PostToProvider:
        """IsPassive, and the user would have to be asked: a signed NoPassive status."""
        server = await self._server(checked.provider, False)
        async with self._db.begin() as db:
            await SamlRequests(db).answer(
                checked.provider.id, checked.request_id, self._clock.now()
            )
        response = await asyncio.to_thread(
            server.create_error_response,
            checked.request_id,
            checked.acs_url,
            (STATUS_NO_PASSIVE, "the user must sign in"),
            sign=True,
            sign_alg=SIG_RSA_SHA256,
            digest_alg="http://www.w3.org/2001/04/xmlenc#sha256",
        )
        encoded = base64.b64encode(str(response).encode()).decode("ascii")
        return PostToProvider(checked.acs_url, encoded, relay_state)


def _instant(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(calendar.timegm(str_to_time(value)), tz=UTC)
    except (TypeError, ValueError):
        raise InvalidSamlRequest(f"IssueInstant {value!r} is not a time") from None


def _acs_of(provider: ServiceProvider, request: Any) -> str:
    """The ACS a response to `request` goes to: the URL it names, exactly as registered, or
    the endpoint of the index it names, or the provider's default."""
    posts = [e for e in provider.acs_endpoints if e["binding"] == BINDING_HTTP_POST]
    if request.assertion_consumer_service_url:
        wanted = request.assertion_consumer_service_url
        if request.protocol_binding not in (None, BINDING_HTTP_POST):
            raise UnregisteredAssertionConsumer(f"binding {request.protocol_binding!r}")
        if not any(e["location"] == wanted for e in posts):
            raise UnregisteredAssertionConsumer(f"{wanted!r} is not an ACS of {provider.entity_id}")
        return str(wanted)
    if request.assertion_consumer_service_index is not None:
        index = int(request.assertion_consumer_service_index)
        for endpoint in posts:
            if endpoint["index"] == index:
                return str(endpoint["location"])
        raise UnregisteredAssertionConsumer(f"no ACS index {index} for {provider.entity_id}")
    return _default_acs(provider)


def _default_acs(provider: ServiceProvider) -> str:
    posts = [e for e in provider.acs_endpoints if e["binding"] == BINDING_HTTP_POST]
    chosen = next((e for e in posts if e["is_default"]), None)
    chosen = chosen or min(posts, key=lambda e: int(e["index"]))
    return str(chosen["location"])

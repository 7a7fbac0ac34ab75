"""/api/v1/settings for the methods' own settings: the mail server codes by e-mail go through
(with Send test e-mail), who chooses the address they go to, the name authenticator apps show,
and the security question pool. The SMTP password is write-only: answers say only whether one
is set."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from twofa.domain.smtp_settings import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, SmtpConfig, SmtpEdit
from twofa.services.second_factor.question_pool import QuestionPoolView
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses
from twofa.web.api.models import Email, RequestModel, Text100, Text300

router = APIRouter(
    prefix="/settings",
    tags=["settings"],
    route_class=ApiRoute,
    responses=error_responses(401, 422),
)
REJECTED = error_responses(400)
Security = Literal["none", "starttls", "tls"]
Port = Annotated[int, Field(ge=1, le=65535)]
TimeoutS = Annotated[int, Field(ge=1, le=MAX_TIMEOUT_S)]


class EmailServerOut(BaseModel):
    configured: bool = Field(description="False until an admin saves a mail server.")
    host: str
    port: int
    security: Security
    from_address: str
    username: str = Field(description='"" when the server asks for no login.')
    password_set: bool
    timeout_s: int


class EmailServerIn(RequestModel):
    host: Text300 = Field(description="Host name or IP address, e.g. smtp.example.com.")
    port: Port = 587
    security: Security = "starttls"
    from_address: Text300 = Field(description="The sender, e.g. twofa@example.com.")
    username: Text300 = Field(default="", description='"" for no login (drops the password).')
    password: Text300 | None = Field(
        default=None, description="Leave out or empty to keep the stored one."
    )
    timeout_s: TimeoutS = DEFAULT_TIMEOUT_S


class TestEmailIn(RequestModel):
    to: Email = Field(description="Where to send the test message.")


class TestEmailOut(BaseModel):
    sent: bool
    message: str = Field(description="What happened, in the console's words.")


class EmailCodesSettings(RequestModel):
    users_choose_address: bool = Field(
        description="Users type the address at set-up (confirmed by a code); false: codes go "
        "to the account's address."
    )


class AuthenticatorAppSettings(RequestModel):
    issuer: Text100 = Field(
        description="The name apps list keys under, as 'name:username'; no colon. Applies to "
        "keys set up from then on."
    )


class SecurityQuestionsIn(RequestModel):
    questions: Annotated[list[Text300], Field(min_length=1, max_length=50)] = Field(
        description="The whole pool users pick from, in order. Users who answered a question "
        "that is left out keep it."
    )
    answers_required: Annotated[int, Field(ge=1, le=5)] = Field(
        description="How many questions each user answers at set-up."
    )


class SecurityQuestionsOut(SecurityQuestionsIn):
    customised: bool = Field(description="False while the built-in pool applies.")


def questions_out(pool: QuestionPoolView) -> SecurityQuestionsOut:
    return SecurityQuestionsOut(
        questions=list(pool.questions),
        answers_required=pool.answers_required,
        customised=pool.customised,
    )


def email_server_out(config: SmtpConfig | None) -> EmailServerOut:
    if config is None:
        return EmailServerOut(
            configured=False,
            host="",
            port=587,
            security="starttls",
            from_address="",
            username="",
            password_set=False,
            timeout_s=DEFAULT_TIMEOUT_S,
        )
    return EmailServerOut(
        configured=True,
        host=config.host,
        port=config.port,
        security=config.security.value,
        from_address=config.from_address,
        username=config.username,
        password_set=config.has_password,
        timeout_s=config.timeout_s,
    )


@router.get("/email", summary="The mail server codes by e-mail go through (never the password)")
async def get_email_server(api: Api) -> EmailServerOut:
    return email_server_out(await api.gateway.smtp.get())


@router.put("/email", summary="Save the mail server", responses=REJECTED)
async def put_email_server(api: Api, body: EmailServerIn) -> EmailServerOut:
    edit = SmtpEdit(
        host=body.host,
        port=str(body.port),
        security=body.security,
        from_address=body.from_address,
        username=body.username,
        password=body.password or "",
        timeout_s=str(body.timeout_s),
    )
    return email_server_out(await api.gateway.smtp.save(edit, api.actor, api.client))


@router.post("/email/test", summary="Send a test message through the saved mail server")
async def send_test_email(api: Api, body: TestEmailIn) -> TestEmailOut:
    outcome = await api.gateway.smtp.send_test(body.to, api.actor, api.client)
    return TestEmailOut(sent=outcome.sent, message=outcome.message)


@router.get("/email-codes", summary="Who chooses the address codes by e-mail go to")
async def get_email_codes(api: Api) -> EmailCodesSettings:
    return EmailCodesSettings(
        users_choose_address=await api.gateway.email_codes.users_choose_address()
    )


@router.put("/email-codes", summary="Let users choose the address, or not")
async def put_email_codes(api: Api, body: EmailCodesSettings) -> EmailCodesSettings:
    options = api.gateway.email_codes
    await options.set_users_choose_address(body.users_choose_address, api.actor, api.client)
    return EmailCodesSettings(users_choose_address=await options.users_choose_address())


@router.get("/authenticator-app", summary="The name authenticator apps list keys under")
async def get_authenticator_app(api: Api) -> AuthenticatorAppSettings:
    return AuthenticatorAppSettings(issuer=await api.gateway.authenticator_app.issuer())


@router.put("/authenticator-app", summary="Save the name apps show", responses=REJECTED)
async def put_authenticator_app(
    api: Api, body: AuthenticatorAppSettings
) -> AuthenticatorAppSettings:
    issuer, _ = await api.gateway.authenticator_app.set_issuer(body.issuer, api.actor, api.client)
    return AuthenticatorAppSettings(issuer=issuer)


@router.get("/security-questions", summary="The security question pool and how many users answer")
async def get_security_questions(api: Api) -> SecurityQuestionsOut:
    return questions_out(await api.gateway.question_pool.pool())


@router.put("/security-questions", summary="Replace the pool", responses=REJECTED)
async def put_security_questions(api: Api, body: SecurityQuestionsIn) -> SecurityQuestionsOut:
    pool = api.gateway.question_pool
    replaced = await pool.replace(body.questions, body.answers_required, api.actor, api.client)
    return questions_out(replaced)

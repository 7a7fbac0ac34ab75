"""The signed Auth API v2 endpoints: ping, check, logo, enroll, enroll_status, preauth, auth,
auth_status, with Duo's parameters, response shapes and error codes.
"""

from __future__ import annotations

import asyncio
import io
import urllib.parse
from collections.abc import Awaitable, Callable

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from twofa.duo.models import Capability, Factor, PreauthOutcome, TransactionStatus
from twofa.simulator.errors import DuoFailure, invalid_parameter, missing_parameter
from twofa.simulator.logo import LOGO_PNG
from twofa.simulator.state import SimulatorState
from twofa.simulator.transactions import PushContext, Transaction
from twofa.simulator.users import SimDevice, SimUser
from twofa.simulator.verify import ReceivedRequest, VerifiedRequest, verify_request

Handler = Callable[[Request], Awaitable[Response]]


def ok(response: object) -> JSONResponse:
    return JSONResponse({"stat": "OK", "response": response})


def state_of(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


async def apply_faults(state: SimulatorState, path: str) -> None:
    plan = state.faults
    if plan is None or not plan.take(path):
        return
    if plan.latency_ms:
        await asyncio.sleep(plan.latency_ms / 1000)
    if plan.failure is not None:
        raise plan.failure


async def verified(request: Request) -> VerifiedRequest:
    state = state_of(request)
    await apply_faults(state, request.url.path)
    received = ReceivedRequest(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        body=await request.body(),
        headers=dict(request.headers),
    )
    return verify_request(
        received,
        secret_for=state.secrets_by_ikey(),
        api_hostname=state.settings.api_hostname,
        now=state.clock(),
        window_s=state.settings.date_window_s,
    )


def required(call: VerifiedRequest, name: str) -> str:
    value = call.get(name)
    if value is None or value == "":
        raise missing_parameter(name)
    return value


def int_param(call: VerifiedRequest, name: str, default: int) -> int:
    value = call.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise invalid_parameter(name)
    return int(value)


def find_user(state: SimulatorState, call: VerifiedRequest) -> tuple[str | None, SimUser | None]:
    """The username asked for and the user, by exactly one of `username` or `user_id`."""
    username, user_id = call.get("username"), call.get("user_id")
    if (username is None) == (user_id is None):
        raise invalid_parameter("exactly one of username or user_id is required")
    if user_id is not None:
        user = state.users.by_id(user_id)
        if user is None:
            raise invalid_parameter("user_id")
        return user.username, user
    return username, state.users.by_name(str(username))


async def ping(request: Request) -> Response:
    # Duo needs no signature here; duo_client signs it anyway, and either is accepted.
    state = state_of(request)
    await apply_faults(state, request.url.path)
    return ok({"time": int(state.clock())})


async def check(request: Request) -> Response:
    await verified(request)
    return ok({"time": int(state_of(request).clock())})


async def logo(request: Request) -> Response:
    call = await verified(request)
    if not state_of(request).integrations[call.ikey].has_logo:
        raise DuoFailure(40002, "Logo not found")
    return Response(LOGO_PNG, media_type="image/png")


async def enroll(request: Request) -> Response:
    call = await verified(request)
    state = state_of(request)
    valid_secs = int_param(call, "valid_secs", state.settings.enrollment_valid_secs)
    bypass_count = int_param(call, "bypass_codes", 0)
    user, enrollment = state.users.enroll(call.get("username"), valid_secs, bypass_count)
    code = urllib.parse.quote(enrollment.activation_code, safe="")
    answer: dict[str, object] = {
        "activation_barcode": f"{str(request.base_url).rstrip('/')}/frame/qr?value={code}",
        "activation_code": enrollment.activation_code,
        "expiration": int(enrollment.expires_at),
        "user_id": user.user_id,
        "username": user.username,
    }
    if call.get("bypass_codes") is not None:
        answer["bypass_codes"] = sorted(user.bypass_codes)
    return ok(answer)


async def enroll_status(request: Request) -> Response:
    call = await verified(request)
    state = state_of(request)
    user_id, code = required(call, "user_id"), required(call, "activation_code")
    enrollment = state.users.enrollment(code)
    if enrollment is None or enrollment.user_id != user_id:
        return ok("invalid")
    return ok(enrollment.status(state.clock()).value)


async def preauth(request: Request) -> Response:
    call = await verified(request)
    state = state_of(request)
    username, user = find_user(state, call)
    outcome = user.preauth_override if user else PreauthOutcome.ENROLL
    if user is not None and outcome is None:
        outcome = PreauthOutcome.AUTH if user.devices else PreauthOutcome.ENROLL
    token = call.get("trusted_device_token")
    if user is not None and outcome is PreauthOutcome.AUTH and token in user.trusted_device_tokens:
        outcome = PreauthOutcome.ALLOW
    answer: dict[str, object] = {"result": outcome.value if outcome else "enroll"}
    if outcome is PreauthOutcome.AUTH and user is not None:
        answer["status_msg"] = "Account is active"
        answer["devices"] = [device.to_json() for device in user.devices]
    elif outcome is PreauthOutcome.ALLOW:
        answer["status_msg"] = "Allowing unknown user" if user is None else "Bypass: access allowed"
    elif outcome is PreauthOutcome.DENY:
        answer["status_msg"] = "Access denied by policy"
    else:
        answer["status_msg"] = "Enroll an authentication device to proceed"
        answer["enroll_portal_url"] = (
            f"{str(request.base_url).rstrip('/')}/portal?username={urllib.parse.quote(str(username))}"
        )
    return ok(answer)


def pick_device(user: SimUser, call: VerifiedRequest, capability: Capability) -> SimDevice:
    wanted = call.get("device") or "auto"
    if wanted == "auto":
        device = user.first_capable(capability)
        if device is None:
            raise invalid_parameter("no capable device")
        return device
    device = user.device(wanted)
    if device is None:
        raise invalid_parameter("device")
    if not device.can(capability):
        raise invalid_parameter("no capable device")
    return device


def push_context(call: VerifiedRequest) -> PushContext:
    pushinfo = call.get("pushinfo") or ""
    if len(pushinfo.encode()) >= 20000:
        raise invalid_parameter("pushinfo")
    return PushContext(
        type=call.get("type"),
        display_username=call.get("display_username"),
        pushinfo=tuple(urllib.parse.parse_qsl(pushinfo, keep_blank_values=True)),
        ipaddr=call.get("ipaddr"),
    )


def start_transaction(state: SimulatorState, user: SimUser, call: VerifiedRequest) -> Transaction:
    """Opens the transaction `auth` asked for; passcode and SMS ones end at once."""
    try:
        factor = Factor(required(call, "factor"))
    except ValueError:
        raise invalid_parameter("factor") from None
    book = state.transactions
    if user.preauth_override in (PreauthOutcome.ALLOW, PreauthOutcome.DENY):
        ended = book.open(user.username, factor, TransactionStatus.PUSHED, push=push_context(call))
        allowed = user.preauth_override is PreauthOutcome.ALLOW
        book.settle(ended, TransactionStatus.BYPASS if allowed else TransactionStatus.DENY)
        return ended
    if factor is Factor.PASSCODE:
        if call.get("device") is not None:
            raise invalid_parameter("device")
        accepted = user.consume_passcode(required(call, "passcode"))
        ended = book.open(user.username, factor, TransactionStatus.PUSHED, push=push_context(call))
        if not accepted:
            ended.status_msg_override = "Incorrect passcode. Please try again."
        book.settle(ended, TransactionStatus.ALLOW if accepted else TransactionStatus.DENY)
        return ended
    if factor is Factor.SMS:
        device = pick_device(user, call, Capability.SMS)
        user.text_passcodes(device, state.clock())
        ended = book.open(user.username, factor, TransactionStatus.PUSHED, device=device.device_id)
        book.settle(ended, TransactionStatus.SENT)
        return ended
    if factor is Factor.AUTO:
        device = pick_device(user, call, Capability.AUTO)
        factor = Factor.PUSH if device.can(Capability.PUSH) else Factor.PHONE
    else:
        capability = Capability.PUSH if factor is Factor.PUSH else Capability.PHONE
        device = pick_device(user, call, capability)
    status = TransactionStatus.PUSHED if factor is Factor.PUSH else TransactionStatus.CALLING
    return book.open(
        user.username, factor, status, device=device.device_id, push=push_context(call)
    )


async def auth(request: Request) -> Response:
    call = await verified(request)
    state = state_of(request)
    _, user = find_user(state, call)
    if user is None:
        raise invalid_parameter("username")
    transaction = start_transaction(state, user, call)
    if (call.get("async") or "0") in ("1", "true"):
        return ok({"txid": transaction.txid})
    await state.transactions.until_final(transaction)
    return ok(transaction.outcome_json())


async def auth_status(request: Request) -> Response:
    call = await verified(request)
    state = state_of(request)
    transaction = state.transactions.get(required(call, "txid"))
    if transaction is None:
        raise invalid_parameter("txid")
    await state.transactions.next_change(transaction, state.settings.long_poll_hold_s)
    return ok(transaction.outcome_json())


async def activation_qr(request: Request) -> Response:
    """The PNG behind `activation_barcode`, rendered locally so it works offline."""
    value = request.query_params.get("value", "")
    if not value:
        raise missing_parameter("value")
    image = io.BytesIO()
    segno.make(value, error="m").save(image, kind="png", scale=6, border=2)
    return Response(image.getvalue(), media_type="image/png")


def routes() -> list[Route]:
    endpoints: list[tuple[str, Handler, str]] = [
        ("ping", ping, "GET"),
        ("check", check, "GET"),
        ("logo", logo, "GET"),
        ("enroll", enroll, "POST"),
        ("enroll_status", enroll_status, "POST"),
        ("preauth", preauth, "POST"),
        ("auth", auth, "POST"),
        ("auth_status", auth_status, "GET"),
    ]
    table = [
        Route(f"/auth/v2/{name}", handler, methods=[verb]) for name, handler, verb in endpoints
    ]
    table.append(Route("/frame/qr", activation_qr, methods=["GET"]))
    return table

"""The control plane under `/_sim/`: unsigned JSON that plays the person and the Duo admin.

Tests outside this package rely on these paths and fields; change them only together with
the README's contract section.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from twofa.duo.models import Capability, DeviceType, Factor, PreauthOutcome, TransactionStatus
from twofa.simulator.errors import DuoFailure
from twofa.simulator.faults import FaultPlan
from twofa.simulator.state import Integration, SimulatorState
from twofa.simulator.transactions import Transaction
from twofa.simulator.users import SimDevice, new_device

ACTIONS: Final = {
    "approve": TransactionStatus.ALLOW,
    "deny": TransactionStatus.DENY,
    "fraud": TransactionStatus.FRAUD,
    "timeout": TransactionStatus.TIMEOUT,
    "answer": TransactionStatus.ANSWERED,  # a phone call picked up, no key pressed yet
}


class ControlError(Exception):
    """A control-plane request that cannot be carried out; answered as `{"error": …}`."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def state_of(request: Request) -> SimulatorState:
    state: SimulatorState = request.app.state.simulator
    return state


async def json_object(request: Request) -> Mapping[str, object]:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(400, "body must be a JSON object")
    return body


def text(body: Mapping[str, object], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ControlError(400, f"{name!r} must be a non-empty string")
    return value


E = TypeVar("E", DeviceType, Capability, PreauthOutcome, TransactionStatus)


def enum_of(kind: type[E], value: object, name: str) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ControlError(400, f"{name!r} must be one of: {allowed}") from None


def parse_device(raw: object) -> SimDevice:
    if not isinstance(raw, dict):
        raise ControlError(400, "each device must be an object")
    device_type = enum_of(DeviceType, raw.get("type", "phone"), "type")
    name = text(raw, "name", "iPhone" if device_type is DeviceType.PHONE else "Token")
    capabilities = raw.get("capabilities")
    if capabilities is not None and not isinstance(capabilities, list):
        raise ControlError(400, "'capabilities' must be a list")
    parsed = (
        None
        if capabilities is None
        else [enum_of(Capability, item, "capabilities") for item in capabilities]
    )
    number = raw.get("number", "XXX-XXX-0000" if device_type is DeviceType.PHONE else "")
    return new_device(device_type, name, parsed, number if isinstance(number, str) else "")


async def put_user(request: Request) -> Response:
    body = await json_object(request)
    devices_raw = body.get("devices", [])
    if not isinstance(devices_raw, list):
        raise ControlError(400, "'devices' must be a list")
    preauth_raw = body.get("preauth")
    preauth = None if preauth_raw is None else enum_of(PreauthOutcome, preauth_raw, "preauth")
    devices = [parse_device(raw) for raw in devices_raw]
    user = state_of(request).users.put(text(body, "username"), devices, preauth)
    return JSONResponse(user.to_json())


async def list_users(request: Request) -> Response:
    return JSONResponse([user.to_json() for user in state_of(request).users.all()])


async def list_enrollments(request: Request) -> Response:
    state = state_of(request)
    found = state.users.enrollments(request.query_params.get("username"))
    return JSONResponse([enrollment.to_json(state.clock()) for enrollment in found])


async def activate(request: Request) -> Response:
    body = await json_object(request)
    state = state_of(request)
    number = body.get("number", "")
    if not isinstance(number, str):
        raise ControlError(400, "'number' must be a string")
    try:
        user = state.users.activate(text(body, "activation_code"), number.strip())
    except DuoFailure as exc:
        raise ControlError(400, exc.detail or exc.message) from None
    return JSONResponse(user.to_json())


async def issue_passcode(request: Request) -> Response:
    """What Duo Mobile or a hardware token would display: one fresh, single-use passcode."""
    body = await json_object(request)
    user = state_of(request).users.by_name(text(body, "username"))
    if user is None:
        raise ControlError(404, "no such user")
    return JSONResponse({"passcode": user.issue_passcodes(1)[0]})


async def sms_inbox(request: Request) -> Response:
    """The texts Duo sent the user's phones, oldest first, with the passcodes still unused."""
    user = state_of(request).users.by_name(request.path_params["username"])
    if user is None:
        raise ControlError(404, "no such user")
    return JSONResponse(user.sms_json())


async def list_transactions(request: Request) -> Response:
    status_raw = request.query_params.get("status")
    status = None if status_raw is None else enum_of(TransactionStatus, status_raw, "status")
    book = state_of(request).transactions
    found = book.listing(request.query_params.get("username"), status)
    return JSONResponse([transaction.to_json() for transaction in found])


def settle(state: SimulatorState, txid: str, action: str) -> Transaction:
    if action not in ACTIONS:
        raise ControlError(404, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    transaction = state.transactions.get(txid)
    if transaction is None:
        raise ControlError(404, f"no transaction {txid}")
    calling = transaction.factor is Factor.PHONE and transaction.status is TransactionStatus.CALLING
    if action == "answer" and not calling:
        raise ControlError(409, "only a ringing phone call can be answered")
    if not state.transactions.settle(transaction, ACTIONS[action]):
        raise ControlError(409, f"transaction already ended with status {transaction.status.value}")
    return transaction


async def settle_one(request: Request) -> Response:
    state = state_of(request)
    transaction = settle(state, request.path_params["txid"], request.path_params["action"])
    return JSONResponse(transaction.to_json())


async def settle_batch(request: Request) -> Response:
    """Settles many at once (benchmarks approve thousands); reports those already ended."""
    body = await json_object(request)
    txids = body.get("txids")
    if not isinstance(txids, list) or not all(isinstance(txid, str) for txid in txids):
        raise ControlError(400, "'txids' must be a list of strings")
    state, action = state_of(request), request.path_params["action"]
    settled, refused = [], {}
    for txid in txids:
        try:
            settle(state, txid, action)
            settled.append(txid)
        except ControlError as exc:
            refused[txid] = exc.message
    return JSONResponse({"settled": settled, "refused": refused})


async def set_faults(request: Request) -> Response:
    body = await json_object(request)
    endpoints = body.get("endpoints", [])
    latency, status, count = body.get("latency_ms", 0), body.get("status"), body.get("count")
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ControlError(400, "'endpoints' must be a list of endpoint names")
    if not isinstance(latency, int) or not (status is None or isinstance(status, int)):
        raise ControlError(400, "'latency_ms' and 'status' must be integers")
    if count is not None and not isinstance(count, int):
        raise ControlError(400, "'count' must be an integer")
    try:
        plan = FaultPlan.build(endpoints, latency, status, count)
    except ValueError as exc:
        raise ControlError(400, str(exc)) from None
    state_of(request).faults = plan
    return JSONResponse(plan.to_json())


async def clear_faults(request: Request) -> Response:
    state_of(request).faults = None
    return JSONResponse({"cleared": True})


async def put_integration(request: Request) -> Response:
    body = await json_object(request)
    ikey, skey = text(body, "ikey"), text(body, "skey")
    has_logo = body.get("has_logo", True)
    integration = Integration(ikey, skey, text(body, "name", "twofa"), bool(has_logo))
    state_of(request).integrations[ikey] = integration
    return JSONResponse({"ikey": ikey, "name": integration.name, "has_logo": integration.has_logo})


async def reset(request: Request) -> Response:
    state_of(request).reset()
    return JSONResponse({"reset": True})


def routes() -> list[Route]:
    return [
        Route("/_sim/users", put_user, methods=["POST"]),
        Route("/_sim/users", list_users, methods=["GET"]),
        Route("/_sim/enrollments", list_enrollments, methods=["GET"]),
        Route("/_sim/activate", activate, methods=["POST"]),
        Route("/_sim/passcodes", issue_passcode, methods=["POST"]),
        Route("/_sim/users/{username}/sms", sms_inbox, methods=["GET"]),
        Route("/_sim/transactions", list_transactions, methods=["GET"]),
        Route("/_sim/transactions/{txid}/{action}", settle_one, methods=["POST"]),
        Route("/_sim/batch/{action}", settle_batch, methods=["POST"]),
        Route("/_sim/faults", set_faults, methods=["POST"]),
        Route("/_sim/faults", clear_faults, methods=["DELETE"]),
        Route("/_sim/integrations", put_integration, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]

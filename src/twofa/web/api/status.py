"""/api/v1/status: `twofa doctor`'s checks for a monitor. Always 200 when the checks ran;
`ok` is false and the failed parts say why when any did not answer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from twofa.services.doctor import examine, failed_parts
from twofa.web.api.auth import Api
from twofa.web.api.errors import ApiRoute, error_responses

router = APIRouter(
    prefix="/status", tags=["status"], route_class=ApiRoute, responses=error_responses(401)
)


class CheckOut(BaseModel):
    part: str = Field(description='e.g. "database", "Duo", "mail server", "directory ldap".')
    state: Literal["ok", "FAILED", "not set up", "not checked", "warning"]
    detail: str = Field(description="What answered, or why it did not.")


class StatusOut(BaseModel):
    ok: bool = Field(description="True when no check failed (parts not set up do not count).")
    checks: list[CheckOut]


@router.get("", summary="Check that the database, Duo, mail, Redis and directories answer")
async def get_status(api: Api) -> StatusOut:
    findings = await examine(api.gateway)
    return StatusOut(
        ok=not failed_parts(findings),
        checks=[
            CheckOut(part=finding.part, state=finding.state.value, detail=finding.detail)
            for finding in findings
        ],
    )

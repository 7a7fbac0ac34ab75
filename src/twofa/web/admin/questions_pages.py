"""Admin console: the security questions users choose from and how many they answer. Each
change is its own small form (add one question, remove one, set the number); the rules and
the audit live in `QuestionPoolService`."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from twofa.services.settings.console import SettingsRejected
from twofa.web.admin.guard import Admin, SignedInAdmin
from twofa.web.context import client_of, gateway_of
from twofa.web.templating import render

router = APIRouter(prefix="/admin/settings/security-questions")


PAGE_URL: Final = "/admin/settings/security-questions"
NOTICES: Final = {
    "added": "Question added.",
    "removed": "Question removed. Users who already answered it keep it.",
    "count": "Saved. The new number applies to users who set up security questions from now on.",
}


async def _page(
    request: Request,
    admin: Admin,
    *,
    problems: dict[str, str] | None = None,
    notice: str | None = None,
    typed_question: str = "",
) -> Response:
    pool = await gateway_of(request).question_pool.pool()
    return render(
        request,
        "admin/security_questions.html",
        status_code=400 if problems else 200,
        title="Security questions",
        active_tab="Two Factor Settings",
        admin_name=admin.username,
        csrf_token=admin.session.csrf_token,
        pool=pool,
        problems=problems or {},
        notice=notice,
        typed_question=typed_question,
    )


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@router.get("")
async def security_questions(request: Request, admin: SignedInAdmin) -> Response:
    notice = NOTICES.get(request.query_params.get("saved", ""))
    return await _page(request, admin, notice=notice)


@router.post("/add")
async def add_question(request: Request, admin: SignedInAdmin) -> Response:
    question = _field(await request.form(), "question")
    try:
        await gateway_of(request).question_pool.add(question, admin.username, client_of(request))
    except SettingsRejected as rejected:
        return await _page(request, admin, problems=rejected.problems, typed_question=question)
    return RedirectResponse(f"{PAGE_URL}?saved=added", status_code=303)


@router.post("/remove")
async def remove_question(request: Request, admin: SignedInAdmin) -> Response:
    question = _field(await request.form(), "question")
    try:
        await gateway_of(request).question_pool.remove(question, admin.username, client_of(request))
    except SettingsRejected as rejected:
        return await _page(request, admin, problems=rejected.problems)
    return RedirectResponse(f"{PAGE_URL}?saved=removed", status_code=303)


@router.post("/count")
async def set_answers_required(request: Request, admin: SignedInAdmin) -> Response:
    typed = _field(await request.form(), "answers_required").strip()
    try:
        if not (typed.isascii() and typed.isdigit()):
            raise SettingsRejected({"answers_required": "a whole number"})
        await gateway_of(request).question_pool.set_count(
            int(typed), admin.username, client_of(request)
        )
    except SettingsRejected as rejected:
        return await _page(request, admin, problems=rejected.problems)
    return RedirectResponse(f"{PAGE_URL}?saved=count", status_code=303)

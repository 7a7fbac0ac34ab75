"""The hardening headers: the policy forbids `<base>`, frames and forms to other hosts but the
ones a sign-in returns to, and HSTS comes with an https public URL only."""

from __future__ import annotations

from tests.support.gateway import SECRET
from twofa.config import load_settings
from twofa.web.security_headers import HSTS, SECURITY_HEADERS, security_headers


def headers_for(**settings: object) -> dict[str, str]:
    return dict(
        security_headers(load_settings(environ={}, mode="dev", secret_key=SECRET, **settings))
    )


def test_the_policy_forbids_base_frames_and_foreign_forms() -> None:
    policy = headers_for()["Content-Security-Policy"]
    assert "base-uri 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "form-action 'self'" in policy
    assert SECURITY_HEADERS["Content-Security-Policy"].endswith("form-action 'self'")


def test_forms_may_return_to_the_protected_domains_and_allowed_hosts() -> None:
    policy = headers_for(
        access={"domains": ["jira.example.com", "*.apps.example.com"]},
        allowed_redirect_hosts=["wiki.example.com"],
    )["Content-Security-Policy"]
    assert "form-action 'self' *.apps.example.com jira.example.com wiki.example.com" in policy


def test_attack_a_host_pattern_cannot_inject_a_directive() -> None:
    policy = headers_for(allowed_redirect_hosts=["evil.example; script-src *"])[
        "Content-Security-Policy"
    ]
    assert "script-src" not in policy


def test_hsts_only_behind_https() -> None:
    assert "Strict-Transport-Security" not in headers_for(public_url="http://127.0.0.1:8000")
    secure = headers_for(public_url="https://auth.example.com")
    assert secure["Strict-Transport-Security"] == HSTS

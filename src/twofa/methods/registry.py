"""The methods this gateway offers, listed explicitly and built once at start-up. Asking for
a code that is not registered is an error, never a fallback to some other method."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from twofa.errors import TwofaError
from twofa.methods.base import Method

DUO_PUSH = "duo_push"  # verified by Duo, through its own service
# Every local method twofa ships, in the order users see them. The registry built at start-up
# holds instances of these; the console validates the admin's choices against this list.
LOCAL_METHOD_CODES = ("totp", "webauthn", "backup_codes", "email_otp", "security_questions")


class UnknownMethod(TwofaError):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"unknown second-factor method {code!r}")


class MethodRegistry:
    def __init__(self, methods: Sequence[Method]) -> None:
        self._methods = {method.code: method for method in methods}
        if len(self._methods) != len(methods) or DUO_PUSH in self._methods:
            raise ValueError("method codes must be unique and not duo_push")

    def get(self, code: str) -> Method:
        try:
            return self._methods[code]
        except KeyError:
            raise UnknownMethod(code) from None

    def __contains__(self, code: object) -> bool:
        return code in self._methods

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self._methods)

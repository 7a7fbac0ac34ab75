"""The methods this gateway offers, listed explicitly and built once at start-up: those verified
here (`Method`) and those a provider verifies on the user's phone (`OutOfBandMethod`, Duo
Push). Asking for a code that is not registered is an error, never a fallback to some other
method."""

from __future__ import annotations

from collections.abc import Sequence

from twofa.errors import NotFound
from twofa.methods.base import Method, OutOfBandMethod

DUO_PUSH = "duo_push"
# Every local method twofa ships, in the order users see them. The registry built at start-up
# holds instances of these; the console validates the admin's choices against this list.
LOCAL_METHOD_CODES = ("totp", "webauthn", "backup_codes", "email_otp", "security_questions")


class UnknownMethod(NotFound):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"unknown second-factor method {code!r}")

    @property
    def user_message(self) -> str:
        return "There is no such sign-in method on this server."


class MethodRegistry:
    def __init__(
        self, methods: Sequence[Method], out_of_band: Sequence[OutOfBandMethod] = ()
    ) -> None:
        self._local = {method.code: method for method in methods}
        self._out_of_band = {method.code: method for method in out_of_band}
        if len(self._local) + len(self._out_of_band) != len({*self._local, *self._out_of_band}):
            raise ValueError("method codes must be unique")
        if len(self._local) != len(methods) or len(self._out_of_band) != len(out_of_band):
            raise ValueError("method codes must be unique")

    def get(self, code: str) -> Method | OutOfBandMethod:
        """Any registered method: what the gate, titles and lists need."""
        found = self._out_of_band.get(code) or self._local.get(code)
        if found is None:
            raise UnknownMethod(code)
        return found

    def local(self, code: str) -> Method:
        """A method verified here (the `/2fa/m/{code}` pages); UnknownMethod otherwise, an
        out-of-band code included: its own service runs it."""
        try:
            return self._local[code]
        except KeyError:
            raise UnknownMethod(code) from None

    def out_of_band(self, code: str) -> OutOfBandMethod:
        try:
            return self._out_of_band[code]
        except KeyError:
            raise UnknownMethod(code) from None

    def is_local(self, code: object) -> bool:
        return code in self._local

    def __contains__(self, code: object) -> bool:
        return code in self._local or code in self._out_of_band

    def local_methods(self) -> tuple[Method, ...]:
        return tuple(self._local.values())

    @property
    def codes(self) -> tuple[str, ...]:
        """Every registered code, the out-of-band ones first (the order users see them)."""
        return (*self._out_of_band, *self._local)

    @property
    def local_codes(self) -> tuple[str, ...]:
        return tuple(self._local)

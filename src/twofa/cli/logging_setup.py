"""How the gateway logs (`log_format` in the settings): lines for a person ("text"), or one
JSON object per line for a log shipper ("json").

A JSON line has `time` (UTC, ISO 8601), `level`, `logger` and `message`, the traceback as
`exception`, and any `extra=` fields of the call. An audit record's line (logger
`twofa.audit`, services.state.audit) carries the audit record's own fields beside them:
`kind`, `outcome`, `username`, `client_ip`, `user_agent` and `detail`; uvicorn's access
lines carry `client`, `method`, `path`, `http_version` and `status`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal

from uvicorn.config import LOGGING_CONFIG

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
ACCESS_LOGGER: Final = "uvicorn.access"
# The attribute an audit line carries the audit record's fields in (services.state.audit).
AUDIT_EXTRA: Final = "audit"
_ACCESS_ARGUMENTS: Final = ("client", "method", "path", "http_version", "status")
# What every LogRecord has: anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_NOT_FOR_JSON: Final = frozenset({"color_message", AUDIT_EXTRA})  # uvicorn's coloured copy


def audit_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """The audit record's fields of an audit line, or None for any other line."""
    given = getattr(record, AUDIT_EXTRA, None)
    return dict(given) if isinstance(given, dict) else None


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line (a newline inside a value is escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            line.update(zip(_ACCESS_ARGUMENTS, args, strict=True))
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _NOT_FOR_JSON and name not in line:
                line[name] = value
        audit = audit_fields(record)
        if audit is not None:
            line.update(audit)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a detail value JSON has no type for (a datetime, an enum) as its text.
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(log_format: Literal["text", "json"] = "text") -> None:
    """The root logger at INFO to stderr in `log_format`, replacing whatever was set before
    (the command sets text first, to report settings it cannot load)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Python's warnings (a library's deprecation) as log records: one format, one stream.
    logging.captureWarnings(True)


def uvicorn_log_config(log_format: Literal["text", "json"]) -> dict[str, Any] | None:
    """uvicorn's `log_config`: its own (coloured text, its own handlers) for text; None for
    JSON, so its loggers (errors, access lines) reach the root logger's JSON handler."""
    return None if log_format == "json" else LOGGING_CONFIG

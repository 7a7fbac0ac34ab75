"""The JSON log format: one JSON object per line, whatever the message holds, with an audit
record's own fields on its line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from twofa.cli.logging_setup import JsonLines, configure_logging
from twofa.domain.client import ClientInfo
from twofa.services.state.audit import announce


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the loggers below write, through the JSON formatter."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield written
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def objects(written: io.StringIO) -> list[dict[str, object]]:
    text = written.getvalue()
    assert text.endswith("\n")
    parsed = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(entry, dict) for entry in parsed)
    return parsed


def test_an_audit_line_carries_the_audit_record_fields(lines: io.StringIO) -> None:
    client = ClientInfo(ip="198.51.100.7", user_agent="Firefox")
    detail = {"reason": "x", "at": datetime(2026, 1, 2, tzinfo=UTC)}
    announce("login", "bad_password", "alice", client, detail)
    (entry,) = objects(lines)
    assert entry["logger"] == "twofa.audit"
    assert entry["level"] == "INFO"
    assert entry["kind"] == "login"
    assert entry["outcome"] == "bad_password"
    assert entry["username"] == "alice"
    assert entry["client_ip"] == "198.51.100.7"
    assert entry["user_agent"] == "Firefox"
    assert entry["detail"] == {"reason": "x", "at": "2026-01-02 00:00:00+00:00"}  # as text
    assert "login bad_password user=alice" in str(entry["message"])
    assert str(entry["time"]).endswith("+00:00")


def test_a_loud_audit_kind_is_a_warning(lines: io.StringIO) -> None:
    announce("failmode", "safe", "bob", ClientInfo(), {})
    (entry,) = objects(lines)
    assert entry["level"] == "WARNING"
    assert entry["kind"] == "failmode"


def test_audit_fields_given_as_extra_win(lines: io.StringIO) -> None:
    fields = {"kind": "k", "outcome": "o", "username": "u", "client_ip": "", "user_agent": "ua"}
    logging.getLogger("twofa.audit").info("something", extra={"audit": fields})
    (entry,) = objects(lines)
    assert {key: entry[key] for key in fields} == fields
    assert "audit" not in entry


def test_line_breaks_and_tracebacks_stay_on_one_line(lines: io.StringIO) -> None:
    log = logging.getLogger("twofa.test")
    log.info('two\nlines and a quote " and ünïcode')
    try:
        raise ValueError("boom\nagain")
    except ValueError:
        log.exception("failed")
    first, second = objects(lines)
    assert first["message"] == 'two\nlines and a quote " and ünïcode'
    assert second["message"] == "failed"
    assert "ValueError: boom" in str(second["exception"])
    assert len(lines.getvalue().splitlines()) == 2


def test_extra_fields_are_kept(lines: io.StringIO) -> None:
    logging.getLogger("twofa.test").info(
        "with extra", extra={"request_id": 7, "color_message": "x"}
    )
    (entry,) = objects(lines)
    assert entry["request_id"] == 7
    assert "color_message" not in entry  # uvicorn's coloured copy of the message


def test_an_access_line_carries_its_request() -> None:
    """Formatted directly: uvicorn's own logging set-up (other tests start servers) may stop
    its access logger from reaching the root logger."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/healthz", "1.1", 200),
        None,
    )
    access = json.loads(JsonLines().format(record))
    assert access["message"] == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert (access["client"], access["method"], access["path"]) == (
        "127.0.0.1:5000",
        "GET",
        "/healthz",
    )
    assert (access["http_version"], access["status"]) == ("1.1", 200)


def test_configure_logging_json_replaces_the_text_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("text")
        logging.getLogger("twofa.test").info("as text")
        configure_logging("json")
        logging.getLogger("twofa.test").info("as json")
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text_line, json_line = capsys.readouterr().err.splitlines()
    assert text_line.endswith("INFO twofa.test as text")
    assert json.loads(json_line)["message"] == "as json"

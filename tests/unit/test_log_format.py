"""``--log-format json``: one JSON object per line, with what the text format shows."""

from __future__ import annotations

import json
import logging

from xp2p.log_format import JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "xp2p.cloud", "levelno": logging.WARNING, "levelname": "WARNING"}
    )
    made.msg, made.args = message, args
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_the_text_formats_message() -> None:
    line = JsonFormatter().format(record("device %s/%s signed in", "DEMO", "cam1", node="a"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "device DEMO/cam1 signed in"
    assert (doc["level"], doc["logger"], doc["node"]) == ("WARNING", "xp2p.cloud", "a")
    assert doc["time"].endswith("+00:00")


def test_an_exception_travels_inside_the_object() -> None:
    try:
        raise ValueError("bad frame\nsecond line")
    except ValueError:
        import sys

        made = record("unhandled error in %s", "GET /x")
        made.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(made))
    assert doc["message"] == "unhandled error in GET /x"
    assert "ValueError: bad frame" in doc["exception"] and "Traceback" in doc["exception"]

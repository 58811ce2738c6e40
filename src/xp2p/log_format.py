"""``--log-format json``: one JSON object per log line, for log shippers (Loki, Fluent Bit,
journald's JSON mode) that would otherwise have to parse the text format back."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

#: LogRecord attributes every record has; anything else came from ``extra=`` and is kept.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, plus ``exception`` with its traceback and
    any ``extra=`` fields. The message is the same text the text format shows, so what the
    code keeps out of logs (secrets, tokens) stays out of these too."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        return json.dumps(doc, ensure_ascii=False)

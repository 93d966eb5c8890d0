"""The server's log lines: one JSON object per line, secrets redacted."""

from __future__ import annotations

import json
import logging

from audiorec.secrets import redact


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            k: redact(v) if isinstance(v, str) else v
            for k, v in getattr(record, "fields", {}).items()
        }
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "msg": redact(record.getMessage()),
            **fields,
        }
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))[-2000:]
        return json.dumps(line)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("audiorec")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False

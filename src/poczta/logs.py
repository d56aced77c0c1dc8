"""Structured log lines: one line per decision that matters, as `event key=value ...` or JSON."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_LOGGER = logging.getLogger("poczta")
_CONTEXT: dict[str, object] = {}  # added to every line of this process (e.g. its worker pid)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {"level": record.levelname.lower(), "event": record.getMessage()}
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower()}"]
        parts.append(record.getMessage())
        parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("poczta")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_log_context(**fields: object) -> None:
    """Add `fields` to every later line of this process (a worker tags its lines with its pid)."""
    _CONTEXT.update(fields)


def log(event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one structured event line, e.g. log("smtp.delivered", id=..., rcpts=2)."""
    if _LOGGER.isEnabledFor(level):
        _LOGGER.log(level, event, extra={"fields": {**fields, **_CONTEXT}})

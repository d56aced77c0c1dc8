"""Structured log lines: one line per decision that matters, as `event key=value ...` or JSON.

`log` is on every message's path (two lines per SMTP message), so once `setup_logging`
has chosen the stream it formats the line itself and writes it there, without making a
`logging.LogRecord` (a third of the cost). Lines of other loggers (library warnings, a
store failure's traceback) still go through `logging`, to the same stream and format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any, TextIO

_LOGGER = logging.getLogger("poczta")
_CONTEXT: dict[str, object] = {}  # added to every line of this process (e.g. its worker pid)


_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def _json_line(level: str, event: str, fields: dict[str, Any]) -> str:
    return json.dumps({"level": level, "event": event, **fields}, default=str)


def _text_line(stamp: str, level: str, event: str, fields: dict[str, Any]) -> str:
    parts = [stamp, level, event]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
    return " ".join(parts)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return _json_line(record.levelname.lower(), record.getMessage(), fields)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, _TIME_FORMAT)
        fields = getattr(record, "fields", {})
        line = _text_line(stamp, record.levelname.lower(), record.getMessage(), fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    """A value as one token: JSON-quoted when it is empty, has a space, `"` or `=`, or
    has any character that is not printable, so no value can start a line or fake a field.
    """
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    return json.dumps(text)


class _DirectWriter:
    """The fast path of `log`: the stream, the threshold and a per-second timestamp."""

    def __init__(self, stream: TextIO, level: int, fmt: str) -> None:
        self.stream = stream
        self.level = level
        self.json = fmt == "json"
        self._second = -1
        self._stamp = ""

    def _timestamp(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime(_TIME_FORMAT, time.localtime(now))
        return self._stamp

    def write(self, level: int, event: str, fields: dict[str, object]) -> None:
        name = logging.getLevelName(level).lower()
        if self.json:
            line = _json_line(name, event, fields)
        else:
            line = _text_line(self._timestamp(), name, event, fields)
        # a closed or broken stream must not stop the server
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(line + "\n")


_DIRECT: _DirectWriter | None = None


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _DIRECT
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("poczta")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    _DIRECT = _DirectWriter(sys.stderr, root.getEffectiveLevel(), fmt)


def set_log_context(**fields: object) -> None:
    """Add `fields` to every later line of this process (a worker tags its lines with its pid)."""
    _CONTEXT.update(fields)


def log(event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one structured event line, e.g. log("smtp.delivered", id=..., rcpts=2)."""
    direct = _DIRECT
    if direct is not None:
        if level >= direct.level:
            direct.write(level, event, {**fields, **_CONTEXT})
        return
    if _LOGGER.isEnabledFor(level):
        _LOGGER.log(level, event, extra={"fields": {**fields, **_CONTEXT}})

"""Structured log lines: one line per decision that matters, as `event key=value ...` or JSON.

`log` is on every message's path (two lines per SMTP message), so once `setup_logging`
has chosen the stream it formats the line itself and writes it there, without making a
`logging.LogRecord` (a third of the cost), and writes the lines of one turn of the event
loop together. Lines of other loggers (library warnings, a
store failure's traceback) still go through `logging`, to the same stream and format.

Lines an outsider can make us write at any rate (a refused connection) go through a
`FloodLimit` instead: a few per second of each kind, then one `log.suppressed` line
counting the rest. `log` itself stays as cheap as it was.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    # Most strings recur line after line; other values (exceptions...) are not kept alive.
    return _quote_text(value) if type(value) is str else _quote_uncached(str(value))


def _quote_uncached(text: str) -> str:
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    return json.dumps(text)


_quote_text = functools.lru_cache(maxsize=4096)(_quote_uncached)


class _DirectWriter:
    """The fast path of `log`: the stream, the threshold and a per-second timestamp.

    Inside a running event loop, lines are collected and written together at the end of
    the loop's turn (one write for all the lines that turn made, where each line used
    to cost a system call of its own); outside one, and before any line of the
    `logging` handler (`_OrderedHandler`), they are written at once, so the order of
    lines on the stream is the order they were logged in. An exit flushes what is left.
    """

    MAX_PENDING = 256  # lines: beyond these, write without waiting for the turn to end

    def __init__(self, stream: TextIO, level: int, fmt: str) -> None:
        self.stream = stream
        self.level = level
        self.json = fmt == "json"
        self._second = -1
        self._stamp = ""
        self._pending: list[str] = []

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
        pending = self._pending
        pending.append(line + "\n")
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing would flush it later
                self.flush()
        elif len(pending) >= self.MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Write the collected lines."""
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        # a closed or broken stream must not stop the server
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)


class _OrderedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The `logging` handler of the same stream: flushes `log`'s lines before its own."""

    def emit(self, record: logging.LogRecord) -> None:
        if _DIRECT is not None:
            _DIRECT.flush()
        super().emit(record)


_DIRECT: _DirectWriter | None = None


def _flush_at_exit() -> None:
    if _DIRECT is not None:
        _DIRECT.flush()


atexit.register(_flush_at_exit)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _DIRECT
    if _DIRECT is not None:
        _DIRECT.flush()
    handler = _OrderedHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("poczta")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    _DIRECT = _DirectWriter(sys.stderr, root.getEffectiveLevel(), fmt)


def set_log_context(**fields: object) -> None:
    """Add `fields` to every later line of this process (a worker tags its lines with its pid)."""
    _CONTEXT.update(fields)


def log(event: str, /, level: int = logging.INFO, **fields: object) -> None:
    """Log one structured event line, e.g. log("smtp.delivered", id=..., rcpts=2)."""
    direct = _DIRECT
    if direct is not None:
        if level >= direct.level:
            direct.write(level, event, {**fields, **_CONTEXT})
        return
    if _LOGGER.isEnabledFor(level):
        _LOGGER.log(level, event, extra={"fields": {**fields, **_CONTEXT}})


Schedule = Callable[[float, Callable[[], None]], object]


def _call_later(delay: float, callback: Callable[[], None]) -> None:
    """Run `callback` after `delay` seconds on the running event loop, if there is one."""
    with contextlib.suppress(RuntimeError):  # no loop: the next line of its kind reports
        asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class _Burst:
    window: float  # when the current one-second window began
    lines: int = 0  # written in that window
    suppressed: int = 0  # not written since `since`
    since: float = 0.0
    last: float = 0.0  # when the latest one was suppressed
    fields: dict[str, object] | None = None  # the key fields, for the summary line


class FloodLimit:
    """At most `per_second` lines per kind (the event and its `key` fields) each second;
    the rest are counted and reported by one `log.suppressed` line when the burst has
    been over for a second, and every `report_every` seconds while it lasts."""

    def __init__(
        self,
        per_second: int = 10,
        report_every: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = _call_later,
        write: Callable[..., None] | None = None,
    ) -> None:
        self.per_second = per_second
        self.report_every = report_every
        self._clock = clock
        self._schedule = schedule
        self._write = write if write is not None else log
        self._bursts: dict[tuple[object, ...], _Burst] = {}
        self._flush_due = False

    def log(
        self,
        event: str,
        /,
        level: int = logging.INFO,
        *,
        key: tuple[str, ...] = (),
        **fields: object,
    ) -> None:
        """`log(event, level, **fields)`, unless this kind is over its rate."""
        kind = (event, level, *(fields.get(name) for name in key))
        now = self._clock()
        burst = self._bursts.get(kind)
        if burst is None:
            burst = self._bursts[kind] = _Burst(window=now)
        elif now - burst.window >= 1.0:
            burst.window, burst.lines = now, 0
        self._report(kind, burst, now)
        if burst.lines < self.per_second:
            burst.lines += 1
            self._write(event, level, **fields)
            return
        if not burst.suppressed:
            burst.since = now
            burst.fields = {name: fields.get(name) for name in key}
            self._flush_later()
        burst.suppressed += 1
        burst.last = now

    def flush(self) -> None:
        """Report every burst that is over (or long enough); the schedule calls this."""
        self._flush_due = False
        now = self._clock()
        for kind, burst in list(self._bursts.items()):
            self._report(kind, burst, now)
            if burst.suppressed:
                self._flush_later()
            elif now - burst.window >= 1.0:
                del self._bursts[kind]  # quiet kinds are forgotten

    def _flush_later(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self._schedule(1.0, self.flush)

    def _report(self, kind: tuple[object, ...], burst: _Burst, now: float) -> None:
        if not burst.suppressed:
            return
        if now - burst.last < 1.0 and now - burst.since < self.report_every:
            return
        event, level = kind[0], kind[1]
        assert isinstance(event, str) and isinstance(level, int)
        self._write(
            "log.suppressed",
            level,
            event=event,
            **(burst.fields or {}),
            count=burst.suppressed,
            seconds=f"{burst.last - burst.since:.1f}",
        )
        burst.suppressed = 0

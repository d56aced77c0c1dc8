"""Read deadlines of a session: idle time, one command line, a minimum data rate, the session.

A client that sends one byte now and then must not hold a connection forever, so no
deadline here is moved by a byte alone:

- between commands, the client may stay silent for `idle` seconds counted from the last
  complete command (after its reply was handled), not from its last byte;
- a command line must be complete within `command` seconds of the moment its first byte
  was seen;
- message data (SMTP DATA or a BDAT chunk, an IMAP literal) may take as long as it keeps
  `min_data_rate` bytes per second: the data deadline starts `idle` seconds ahead and each
  read moves it by size / min_data_rate seconds, but never more than `idle` seconds past
  now (as Postfix's smtpd_min_data_rate does with smtpd_timeout);
- the whole session ends `session` seconds after it started.

`ReadDeadlines` is the bookkeeping, with an injected clock; a session asks it how long
the next read may wait (`read`), and after the core has handled what was read, tells it
where the core now is (`received`). Protocols choose their own words for each deadline.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from poczta.net.connection import Connection


class Deadline(enum.Enum):
    """Which limit ended a read; the value names it in logs."""

    IDLE = "idle"
    COMMAND = "command"
    DATA_RATE = "data_rate"
    SESSION = "session"


class DeadlineExpired(Exception):
    """No input arrived before `deadline` ran out."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__(deadline.value)
        self.deadline = deadline


@dataclass(frozen=True, slots=True)
class ReadTimeouts:
    """The limits, in seconds and bytes per second; min_data_rate 0 means no minimum."""

    idle: float
    command: float
    min_data_rate: float
    session: float


class _Phase(enum.Enum):
    BETWEEN_COMMANDS = "between"
    COMMAND_LINE = "line"
    DATA = "data"


class ReadDeadlines:
    """When the next read of one session must end, and which limit that is."""

    def __init__(self, timeouts: ReadTimeouts, clock: Callable[[], float] = time.monotonic):
        self.timeouts = timeouts
        self._clock = clock
        now = clock()
        self._phase = _Phase.BETWEEN_COMMANDS
        self._session_end = now + timeouts.session
        self._idle_from = now
        self._line_from = now
        self._data_end = now

    def next_read(self) -> tuple[float, Deadline]:
        """Seconds the next read may wait (0 when overdue), and the limit that ends it."""
        if self._phase is _Phase.DATA:
            end, deadline = self._data_end, Deadline.DATA_RATE
        else:
            end, deadline = self._idle_from + self.timeouts.idle, Deadline.IDLE
            line_end = self._line_from + self.timeouts.command
            if self._phase is _Phase.COMMAND_LINE and line_end < end:
                end, deadline = line_end, Deadline.COMMAND
        if self._session_end <= end:
            end, deadline = self._session_end, Deadline.SESSION
        return max(0.0, end - self._clock()), deadline

    async def read(self, conn: Connection) -> bytes | None:
        """`conn.read` within the current deadline; raises DeadlineExpired when it passes."""
        wait, deadline = self.next_read()
        try:
            return await conn.read(wait)
        except TimeoutError:
            raise DeadlineExpired(deadline) from None

    def received(
        self, size: int, *, completed: bool, partial_line: bool, in_data: bool = False
    ) -> None:
        """The core has handled `size` bytes of input (and the session its events).

        `completed`: they finished at least one command line or message (the core
        answered); `partial_line`: the core now holds part of a command line;
        `in_data`: it is now receiving message data.
        """
        now = self._clock()
        idle = self.timeouts.idle
        previous = self._phase
        if previous is _Phase.DATA:
            rate = self.timeouts.min_data_rate
            extended = self._data_end + size / rate if rate > 0 else now + idle
            self._data_end = min(extended, now + idle)
        if in_data:
            self._phase = _Phase.DATA
            if previous is not _Phase.DATA:
                self._data_end = now + idle
            return
        if completed or not partial_line:
            self._idle_from = now
        if partial_line:
            self._phase = _Phase.COMMAND_LINE
            if completed or previous is not _Phase.COMMAND_LINE:
                self._line_from = now
        else:
            self._phase = _Phase.BETWEEN_COMMANDS

"""Framing of client input into IMAP commands, incrementally: `CommandReader`.

The reader is fed arbitrary chunks (`feed(data) -> list[Event]`) and finds the
commands in them: lines, and the literals (`{n}`, `{n+}`, `~{n}`) announced at
their ends. Each finished command is parsed (see `parser`) and comes out as a
`Command` value or a `CommandError`. It never raises on client input.

    reader = CommandReader(limits, Dialect())
    for event in reader.feed(data):
        match event:
            case LiteralPending():   write(b"+ Ready\\r\\n"); more = reader.accept_literal()
            case AppendStart() | AppendData(): stage the message octets
            case Authenticate():     challenge; reader.expect_sasl_response() → SaslResponse
            case Idle():             write(b"+ idling\\r\\n"); reader.expect_done() → IdleDone
            case StartTls():         write OK; reader.drop_buffered(); upgrade; reader.resume()
            case Compress():         write OK; pending = reader.take_buffered(); reader.resume()
            case CommandError():     write(event.response().encode())
            case Command():          run it

Synchronising literals wait for the session (`LiteralPending`) unless they break a
limit, in which case the reader answers itself: NO [TOOBIG] (the client never
sends the octets). A non-synchronising literal (LITERAL+; under LITERAL- only up
to 4096 octets) over a limit is read and discarded, up to `max_discard` octets,
with the rest of its command, and answered BAD [TOOBIG]; beyond that cap the
error is fatal. An over-long line is answered BAD at once and discarded up to its
end without being buffered. A command whose literal comes after a syntax error
is refused before the literal is read.

APPEND messages stream: after `AppendStart`, their octets leave as `AppendData`
events as they arrive (never held whole), and the `Append` command follows the
last message. If that command turns out malformed, a `CommandError` follows
instead and the staged messages must be dropped.

After AUTHENTICATE, IDLE, STARTTLS and COMPRESS the reader pauses: input is only
buffered (up to `max_pipelined`) until the session calls `resume`,
`expect_sasl_response` or `expect_done`.
"""

from __future__ import annotations

from enum import Enum, auto

from poczta.imap.commands import Append
from poczta.imap.events import (
    AppendData,
    AppendStart,
    CommandError,
    Event,
    IdleDone,
    LiteralPending,
    SaslResponse,
)
from poczta.imap.fast_path import append_head, parse_simple
from poczta.imap.lexer import (
    AppendHead,
    Incomplete,
    Literal,
    MessageSlot,
    ParseError,
    leading_tag,
    literal_announcement,
)
from poczta.imap.limits import LITERAL_MINUS_MAX, Dialect, ImapLimits
from poczta.imap.parser import PAUSING, append_message, parse_command

_TAIL = 32  # enough of a discarded line's end to find a literal announcement
_HEAD = 256  # enough of a line's start to find its tag


class ReaderUsageError(RuntimeError):
    """The session called a method that does not fit the reader's state."""


class _State(Enum):
    LINE = auto()
    LITERAL = auto()
    MESSAGE = auto()
    DISCARD_LINE = auto()
    DISCARD_LITERAL = auto()
    WAIT_LITERAL = auto()
    PAUSED = auto()
    SASL = auto()
    DONE = auto()
    CLOSED = auto()


_READING = (_State.LITERAL, _State.MESSAGE, _State.DISCARD_LITERAL)


class CommandReader:
    """One connection's command framing and parsing (see the module docstring)."""

    def __init__(self, limits: ImapLimits | None = None, dialect: Dialect | None = None) -> None:
        self.limits = limits or ImapLimits()
        self.dialect = dialect or Dialect()
        self._buffer = bytearray()
        self._scan_from = 0
        self._state = _State.LINE
        self._lines: list[bytes] = []
        self._literals: list[Literal] = []
        self._tag: str | None = None
        self._size = 0
        self._remaining = 0
        self._literal = bytearray()
        self._announced: tuple[int, bool, AppendHead | None] = (0, False, None)
        self._tail = b""
        self._discarded = 0

    # ------------------------------------------------------------------ session interface

    @property
    def closed(self) -> bool:
        """True after a fatal error: the reader ignores all further input."""
        return self._state is _State.CLOSED

    @property
    def buffered(self) -> int:
        """How many received octets are held, not yet consumed."""
        return len(self._buffer)

    @property
    def waiting(self) -> bool:
        """True while the reader waits for the session (a literal decision or a pause)."""
        return self._state in (_State.WAIT_LITERAL, _State.PAUSED)

    def feed(self, data: bytes) -> list[Event]:
        """Take the next input octets; return the events they complete."""
        if self._state is _State.CLOSED:
            return []
        self._buffer += data
        if self.waiting:
            if len(self._buffer) > self.limits.max_pipelined:
                return [self._fatal("too much input while waiting")]
            return []
        return self._run()

    def accept_literal(self) -> list[Event]:
        """Go on after `LiteralPending`: the continuation was sent, read the literal."""
        self._require(_State.WAIT_LITERAL, "accept_literal")
        events: list[Event] = []
        self._begin_literal(events)
        return events + self._run()

    def refuse_literal(self) -> list[Event]:
        """Go on after `LiteralPending` was answered NO or BAD: the command is dropped."""
        self._require(_State.WAIT_LITERAL, "refuse_literal")
        self._reset(_State.LINE)
        return self._run()

    def resume(self) -> list[Event]:
        """Read commands again after a pausing command (or a SASL exchange) is over."""
        self._require(_State.PAUSED, "resume")
        self._state = _State.LINE
        return self._run()

    def expect_sasl_response(self) -> list[Event]:
        """A SASL challenge was sent: the next line is a `SaslResponse` (then paused again)."""
        self._require(_State.PAUSED, "expect_sasl_response")
        self._state = _State.SASL
        return self._run()

    def expect_done(self) -> list[Event]:
        """IDLE began: the next line must be DONE (`IdleDone`); commands follow after it."""
        self._require(_State.PAUSED, "expect_done")
        self._state = _State.DONE
        return self._run()

    def drop_buffered(self) -> None:
        """Forget input received so far (after STARTTLS: it came before the handshake)."""
        self._buffer.clear()
        self._scan_from = 0

    def take_buffered(self) -> bytes:
        """Remove and return the unread input (after COMPRESS: it is compressed)."""
        data = bytes(self._buffer)
        self.drop_buffered()
        return data

    def _require(self, state: _State, method: str) -> None:
        if self._state is not state:
            raise ReaderUsageError(f"{method}() called while the reader is {self._state.name}")

    # ------------------------------------------------------------------ the loop

    def _run(self) -> list[Event]:
        events: list[Event] = []
        while True:
            state = self._state
            if state is _State.LINE:
                progressed = self._line_step(events)
            elif state in _READING:
                progressed = self._literal_step(events)
            elif state is _State.DISCARD_LINE:
                progressed = self._discard_line_step(events)
            elif state is _State.SASL or state is _State.DONE:
                progressed = self._raw_line_step(events)
            else:
                return events
            if not progressed:
                return events

    def _next_line(self, events: list[Event]) -> bytes | None:
        """The next complete line without its line end, or None (an over-long one is BAD)."""
        buffer = self._buffer
        newline = buffer.find(b"\n", self._scan_from)
        limit = self.limits.max_line
        if newline < 0:
            if len(buffer) <= limit + 1:
                self._scan_from = len(buffer)
                return None
            end = len(buffer)
        else:
            end = newline - 1 if newline and buffer[newline - 1] == 0x0D else newline
        if end > limit:
            raw = self._state is _State.SASL or self._state is _State.DONE
            tag = self._tag if self._lines or raw else leading_tag(bytes(buffer[:_HEAD]))
            events.append(CommandError(tag, "command line too long", code="TOOBIG"))
            self._reset(_State.DISCARD_LINE)
            return None
        line = bytes(buffer[:end])
        del buffer[: newline + 1]
        self._scan_from = 0
        return line

    def _simple_lines(self, events: list[Event]) -> None:
        """Take the simple command lines that start the buffer (see `fast_path`), all at once.

        Stops before a line it cannot take (or an over-long or unfinished one), which
        the general path reads next, and after a pausing command.
        """
        buffer = self._buffer
        limits = self.limits
        start = 0
        newline = buffer.find(b"\n", self._scan_from)
        last = None
        while newline >= 0:
            end = newline - 1 if newline > start and buffer[newline - 1] == 0x0D else newline
            if end > start:
                if end - start > limits.max_line:
                    break
                command = parse_simple(bytes(buffer[start:end]), limits)  # within max_command
                if command is None:
                    break
                events.append(command)
                last = command
                if isinstance(command, PAUSING):
                    self._state = _State.PAUSED
                    start = newline + 1
                    break
            start = newline + 1  # an empty line between commands is ignored
            newline = buffer.find(b"\n", start)
        if start:
            del buffer[:start]
            self._scan_from = 0
        if last is not None:
            self._tag = last.tag

    def _line_step(self, events: list[Event]) -> bool:
        if not self._lines:
            self._simple_lines(events)
            if self._state is not _State.LINE:
                return True
        line = self._next_line(events)
        if line is None:
            return self._state is not _State.LINE
        if not self._lines:
            if not line:
                return True  # an empty line between commands is ignored
            self._tag = leading_tag(line[:_HEAD])
        self._lines.append(line)
        self._size += len(line)
        if self._size > self.limits.max_command:
            self._refuse_line(events, CommandError(self._tag, "command too long", code="TOOBIG"))
            return True
        announced = literal_announcement(line)
        if announced is None:
            self._finish(events)
        else:
            self._announce(events, *announced)
        return True

    def _finish(self, events: list[Event]) -> None:
        append = self._one_message_append()
        if append is not None:
            events.append(append)
            self._reset(_State.LINE)
            return
        try:
            command = parse_command(self._lines, self._literals, self.dialect, self.limits)
        except ParseError as error:
            events.append(CommandError(error.tag, error.reason, error.status, error.code))
            self._reset(_State.LINE)
        except Incomplete:  # pragma: no cover - every literal is present by now
            events.append(CommandError(self._tag, "literal missing"))
            self._reset(_State.LINE)
        else:
            events.append(command)
            self._reset(_State.PAUSED if isinstance(command, PAUSING) else _State.LINE)

    def _one_message_append(self) -> Append | None:
        """An APPEND whose one message ends the command, known from its head without parsing."""
        _, _, head = self._announced
        lines = self._lines
        if head is None or head.index or len(lines) != 2 or lines[1] or self._tag is None:
            return None
        slot = self._literals[0]
        if not isinstance(slot, MessageSlot):  # pragma: no cover - a head announces a message
            return None
        return Append(self._tag, head.mailbox, (append_message(head, slot),))

    # ------------------------------------------------------------------ literals

    def _announce(self, events: list[Event], size: int, sync: bool, binary: bool) -> None:
        head = append_head(self._lines[0], self.limits) if len(self._lines) == 1 else None
        error: CommandError | None
        if head is not None:
            error = self._literal_error(size, sync, head)
        else:
            head, error = self._parse_announced(size, sync)
        if error is not None:
            self._refuse_literal(events, error, size, sync)
            return
        self._announced = (size, binary, head)
        if sync:
            self._state = _State.WAIT_LITERAL
            events.append(LiteralPending(self._tag or "", size, binary, head))
        else:
            self._begin_literal(events)

    def _parse_announced(
        self, size: int, sync: bool
    ) -> tuple[AppendHead | None, CommandError | None]:
        """Parse the command up to its announced literal: an APPEND message's head, or an error."""
        try:
            parse_command(self._lines, self._literals, self.dialect, self.limits)
            return None, CommandError(self._tag, "unexpected literal")
        except Incomplete as incomplete:
            return incomplete.head, self._literal_error(size, sync, incomplete.head)
        except ParseError as error:
            return None, CommandError(error.tag, error.reason, error.status, error.code)

    def _literal_error(self, size: int, sync: bool, head: AppendHead | None) -> CommandError | None:
        limits = self.limits
        status = "NO" if sync else "BAD"
        if len(self._literals) >= limits.max_literals:
            return CommandError(self._tag, "too many literals", code="LIMIT")
        if not sync and self.dialect.literal_minus and size > LITERAL_MINUS_MAX:
            return CommandError(
                self._tag, "non-synchronising literal over 4096 octets", code="TOOBIG"
            )
        if head is not None:
            if size > limits.max_append_literal:
                return CommandError(self._tag, "message too large", status, "TOOBIG")
        elif size > limits.max_literal or self._size + size > limits.max_command:
            return CommandError(self._tag, "literal too large", status, "TOOBIG")
        return None

    def _refuse_literal(
        self, events: list[Event], error: CommandError, size: int, sync: bool
    ) -> None:
        if sync:
            events.append(error)
            self._reset(_State.LINE)
        elif size > self.limits.max_discard:
            events.append(CommandError(error.tag, error.reason, error.status, error.code, True))
            self._reset(_State.CLOSED)
        else:
            events.append(error)
            self._reset(_State.DISCARD_LITERAL)
            self._remaining = size
            self._discarded = size

    def _refuse_line(self, events: list[Event], error: CommandError) -> None:
        """Refuse the command at the end of its current line, skipping what follows."""
        line = self._lines[-1]
        events.append(error)
        self._reset(_State.DISCARD_LINE)
        self._after_discarded(events, line[-_TAIL:])

    def _begin_literal(self, events: list[Event]) -> None:
        size, binary, head = self._announced
        self._remaining = size
        if head is None:
            self._state = _State.LITERAL
            self._literal = bytearray()
        else:
            self._state = _State.MESSAGE
            events.append(AppendStart(self._tag or "", head, size, binary))

    def _literal_step(self, events: list[Event]) -> bool:
        state = self._state
        if self._remaining:
            if not self._buffer:
                return False
            take = min(self._remaining, len(self._buffer))
            chunk = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._remaining -= take
            if state is _State.MESSAGE:
                events.append(AppendData(chunk, self._remaining == 0))
            elif state is _State.LITERAL:
                self._literal += chunk
            if self._remaining:
                return False
        elif state is _State.MESSAGE:
            events.append(AppendData(b"", True))
        if state is _State.DISCARD_LITERAL:
            self._state = _State.DISCARD_LINE
            self._tail = b""
            return True
        size, binary, _ = self._announced
        if state is _State.MESSAGE:
            self._literals.append(MessageSlot(size, binary))
        else:
            self._literals.append(bytes(self._literal))
            self._size += size
            self._literal = bytearray()
        self._state = _State.LINE
        return True

    # ------------------------------------------------------------------ discarding, raw lines

    def _discard_line_step(self, events: list[Event]) -> bool:
        buffer = self._buffer
        newline = buffer.find(b"\n")
        if newline < 0:
            self._tail = (self._tail + bytes(buffer[-_TAIL:]))[-_TAIL:]
            buffer.clear()
            return False
        tail = (self._tail + bytes(buffer[max(0, newline - _TAIL) : newline]))[-_TAIL:]
        del buffer[: newline + 1]
        self._scan_from = 0
        self._tail = b""
        self._after_discarded(events, tail.removesuffix(b"\r"))
        return True

    def _after_discarded(self, events: list[Event], line_end: bytes) -> None:
        """A discarded line ended: skip its non-synchronising literal too, if it has one."""
        announced = literal_announcement(line_end)
        if announced is None or announced[1]:
            self._state = _State.LINE  # the command is over: a client whose command
            return  # was refused never sends a synchronising literal
        self._discarded += announced[0]
        if self._discarded > self.limits.max_discard:
            events.append(self._fatal("literal too large to skip"))
            return
        self._remaining = announced[0]
        self._state = _State.DISCARD_LITERAL

    def _raw_line_step(self, events: list[Event]) -> bool:
        line = self._next_line(events)
        if line is None:
            return self._state is not _State.SASL and self._state is not _State.DONE
        if self._state is _State.SASL:
            events.append(SaslResponse(line))
            self._state = _State.PAUSED
        else:
            if line.strip().upper() == b"DONE":
                events.append(IdleDone())
            else:
                events.append(CommandError(self._tag, "expected DONE"))
            self._state = _State.LINE
        return True

    def _fatal(self, reason: str) -> CommandError:
        self._reset(_State.CLOSED)
        self._buffer.clear()
        return CommandError(None, reason, fatal=True)

    def _reset(self, state: _State) -> None:
        """End the current command and continue in `state`."""
        self._state = state
        self._lines = []
        self._literals = []
        self._size = 0
        self._remaining = 0
        self._literal = bytearray()
        self._discarded = 0
        if state is _State.CLOSED:
            self._buffer.clear()

"""Drive `CommandReader` the way a session would, for the IMAP core tests.

`Client.send(data)` feeds octets and answers the reader's questions the way a
plain session does: every `LiteralPending` is accepted, SASL exchanges take one
response, IDLE waits for DONE and STARTTLS/COMPRESS resume at once. The events
come back with each APPEND message's `AppendData` pieces joined into one, so two
runs can be compared whatever the chunking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from poczta.imap import (
    AppendData,
    AppendStart,
    CommandReader,
    Dialect,
    Event,
    ImapLimits,
    LiteralPending,
    SaslResponse,
)
from poczta.imap.commands import Authenticate, Compress, Idle, StartTls


@dataclass
class Client:
    """A reader plus the answers a simple session gives it."""

    limits: ImapLimits = field(default_factory=ImapLimits)
    dialect: Dialect = field(default_factory=Dialect)
    accept: bool = True
    reader: CommandReader = field(init=False)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = CommandReader(self.limits, self.dialect)

    def send(self, data: bytes) -> list[Event]:
        """Feed `data`; return the events it produced (answers included)."""
        start = len(self.events)
        self._drain(self.reader.feed(data))
        return self.events[start:]

    def _drain(self, pending: list[Event]) -> None:
        queue = list(pending)
        while queue:
            event = queue.pop(0)
            self.events.append(event)
            queue = self._answer(event) + queue

    def _answer(self, event: Event) -> list[Event]:
        reader = self.reader
        if isinstance(event, LiteralPending):
            return reader.accept_literal() if self.accept else reader.refuse_literal()
        if isinstance(event, Authenticate):
            return reader.expect_sasl_response()
        if isinstance(event, SaslResponse):
            return reader.resume()
        if isinstance(event, Idle):
            return reader.expect_done()
        if isinstance(event, StartTls | Compress):
            return reader.resume()
        return []


def joined(events: Iterable[Event]) -> list[Event]:
    """The events with consecutive `AppendData` pieces merged."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, AppendData) and out and isinstance(out[-1], AppendData):
            previous = out[-1]
            if not previous.last:
                out[-1] = AppendData(previous.data + event.data, event.last)
                continue
        out.append(event)
    return out


def play(chunks: Iterable[bytes], **options: object) -> list[Event]:
    """Feed the chunks to a fresh client; the joined events."""
    client = Client(**options)  # type: ignore[arg-type]
    for chunk in chunks:
        client.send(chunk)
    return joined(client.events)


def commands(data: bytes, **options: object) -> list[Event]:
    """The events of `data` fed whole, for single-command tables."""
    return play([data], **options)


def parse_one(line: bytes, **options: object) -> Event:
    """The one event a command line (CRLF added) gives."""
    events = commands(line + b"\r\n", **options)
    final = [e for e in events if not isinstance(e, LiteralPending | AppendStart | AppendData)]
    assert len(final) == 1, events
    return final[0]

"""IMAP service: the sans-I/O command reader and parser, and the response encoder.

`CommandReader` (in `reader`) turns client octets into events: typed commands
(`commands`), errors, literal questions and APPEND message data (`events`).
`encoder` turns typed responses into octets; `render` writes commands the way a
client does. `sequence`, `search`, `fetch` and `mutf7` hold the values and
conversions the commands are made of; `limits` the bounds and dialect options.
"""

from poczta.imap.events import (
    AppendData,
    AppendStart,
    CommandError,
    Event,
    IdleDone,
    LiteralPending,
    SaslResponse,
)
from poczta.imap.lexer import AppendHead
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.reader import CommandReader, ReaderUsageError
from poczta.imap.sequence import SequenceSet, compact

__all__ = [
    "AppendData",
    "AppendHead",
    "AppendStart",
    "CommandError",
    "CommandReader",
    "Dialect",
    "Event",
    "IdleDone",
    "ImapLimits",
    "LiteralPending",
    "ReaderUsageError",
    "SaslResponse",
    "SequenceSet",
    "compact",
]

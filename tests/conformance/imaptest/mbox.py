"""The messages of a script's mbox fixture, in the order and form the scripts append them.

A message is every line after its ``From `` separator up to the next separator that
carries a date, line ends made CRLF; the separator's date (UTC when it names no zone)
becomes the APPEND internal date. Past the last message the source starts over, since
``messages: N`` may ask for more than the file holds. The stdlib ``mailbox`` module
reads mbox too, but it unescapes ``>From`` lines and drops the blank line before a
separator, and the scripts' sizes count both as the reference runner sends them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SEPARATOR = re.compile(
    r"From \S*\s+(?:[A-Za-z]{3},?\s+)?(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?\s+(?:[A-Za-z]{3,5}\s+)?"
    r"(?P<year>\d{4})(?:\s+(?P<zone>[+-]\d{4}))?"
)


@dataclass(frozen=True)
class MboxMessage:
    internaldate: str  # IMAP date-time, e.g. 22-Feb-2008 17:06:23 +0000
    text: str  # latin-1, CRLF line ends


def separator_date(line: str) -> str | None:
    """The IMAP date-time of a ``From `` separator line, or None if it is not one."""
    found = _SEPARATOR.match(line)
    if found is None:
        return None
    month = found["month"].capitalize()
    if month not in _MONTHS:
        return None
    return (f"{int(found['day']):02d}-{month}-{found['year']} {int(found['hour']):02d}:"
            f"{found['minute']}:{found['second'] or '00'} {found['zone'] or '+0000'}")


def read_mbox(path: Path) -> list[MboxMessage]:
    lines = path.read_bytes().decode("latin-1").split("\n")
    messages: list[MboxMessage] = []
    date: str | None = None
    body: list[str] = []
    for number, line in enumerate(lines):
        last = number == len(lines) - 1
        found = separator_date(line) if line.startswith("From ") else None
        if found is not None:
            if date is not None:
                messages.append(MboxMessage(date, "".join(body)))
            date, body = found, []
        elif date is None:
            if line.strip():
                raise ValueError(f"{path}: not an mbox file (no From line first)")
        elif not (last and line == ""):
            body.append(line if last else line.removesuffix("\r") + "\r\n")
    if date is not None:
        messages.append(MboxMessage(date, "".join(body)))
    if not messages:
        raise ValueError(f"{path}: empty mbox file")
    return messages


class MessageSource:
    """Hands out a fixture's messages in order, starting over after the last."""

    def __init__(self, messages: list[MboxMessage]) -> None:
        self.messages = messages
        self.position = 0

    @property
    def at_end(self) -> bool:
        return self.position == len(self.messages)

    def next(self) -> MboxMessage:
        if self.at_end:
            self.position = 0
        message = self.messages[self.position]
        self.position += 1
        return message

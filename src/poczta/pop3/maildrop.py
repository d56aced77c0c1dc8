"""The TRANSACTION-state view of a maildrop: message numbers, deletion marks, listings.

Answers STAT, LIST, UIDL, DELE and RSET from the snapshot taken at login, and
resolves message-number arguments. Refusals come back as `Refusal` values for the
server to turn into counted "-ERR" replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from poczta.pop3.events import MaildropSnapshot, MultiLine, Reply
from poczta.pop3.wire import multiline, parse_number, plural, shown, words


@dataclass(frozen=True)
class Refusal:
    """A command the client got wrong: reply "-ERR text" and count an error."""

    text: str


class Maildrop:
    """Message numbers 1..n of a fixed snapshot, with the session's deletion marks."""

    def __init__(self, user: str, snapshot: MaildropSnapshot) -> None:
        self.user = user
        self._messages = snapshot.messages
        self._deleted: set[int] = set()

    @property
    def count(self) -> int:
        """Messages not marked deleted."""
        return len(self._messages) - len(self._deleted)

    @property
    def octets(self) -> int:
        """Total size of the messages not marked deleted."""
        return sum(size for n, (_, size) in enumerate(self._messages, 1) if n not in self._deleted)

    def uid(self, number: int) -> str:
        """The unique-id of message `number`."""
        return self._messages[number - 1][0]

    def size(self, number: int) -> int:
        """The size in octets of message `number`."""
        return self._messages[number - 1][1]

    def deleted_uids(self) -> tuple[str, ...]:
        """UIDs marked deleted, in message-number order."""
        return tuple(self.uid(n) for n in sorted(self._deleted))

    def resolve(self, arg: str) -> int | Refusal:
        """A message-number argument → an existing, undeleted message number."""
        number = parse_number(arg)
        if number is None:
            return Refusal(f"Invalid message number {shown(arg)}".rstrip())
        if not 1 <= number <= len(self._messages):
            return Refusal(f"No such message {number}")
        if number in self._deleted:
            return Refusal(f"Message {number} is deleted")
        return number

    def _live(self) -> list[int]:
        return [n for n in range(1, len(self._messages) + 1) if n not in self._deleted]

    def summary(self) -> str:
        """ "<user> has N messages (M octets)" for greetings and RSET."""
        return f"{self.user} has {plural(self.count, 'message')} ({self.octets} octets)"

    def stat(self) -> Reply:
        """STAT: "+OK count octets"."""
        return Reply(True, f"{self.count} {self.octets}")

    def _optional_number(self, keyword: str, rest: str) -> int | Refusal | None:
        args = words(rest)
        if len(args) > 1:
            return Refusal(f"{keyword} takes at most one message number")
        return self.resolve(args[0]) if args else None

    def list(self, rest: str) -> Reply | MultiLine | Refusal:
        """LIST [n]: sizes of undeleted messages."""
        number = self._optional_number("LIST", rest)
        if number is None:
            first = Reply(True, f"{plural(self.count, 'message')} ({self.octets} octets)")
            return multiline(first, (f"{n} {self.size(n)}" for n in self._live()))
        if isinstance(number, Refusal):
            return number
        return Reply(True, f"{number} {self.size(number)}")

    def uidl(self, rest: str) -> Reply | MultiLine | Refusal:
        """UIDL [n]: unique-ids of undeleted messages."""
        number = self._optional_number("UIDL", rest)
        if number is None:
            first = Reply(True, "Unique-id listing follows")
            return multiline(first, (f"{n} {self.uid(n)}" for n in self._live()))
        if isinstance(number, Refusal):
            return number
        return Reply(True, f"{number} {self.uid(number)}")

    def target(self, keyword: str, rest: str) -> int | Refusal:
        """The one message-number argument of RETR or DELE."""
        args = words(rest)
        if len(args) != 1:
            return Refusal(f"{keyword} needs one message number")
        return self.resolve(args[0])

    def top_target(self, rest: str) -> tuple[int, int] | Refusal:
        """The message number and line count of TOP."""
        args = words(rest)
        if len(args) != 2:
            return Refusal("TOP needs a message number and a line count")
        number = self.resolve(args[0])
        if isinstance(number, Refusal):
            return number
        lines = parse_number(args[1])
        if lines is None:
            return Refusal("Invalid line count")
        return number, lines

    def delete(self, rest: str) -> Reply | Refusal:
        """DELE n: mark message n deleted."""
        number = self.target("DELE", rest)
        if isinstance(number, Refusal):
            return number
        self._deleted.add(number)
        return Reply(True, f"Message {number} deleted")

    def reset(self) -> Reply:
        """RSET: unmark every message."""
        self._deleted.clear()
        return Reply(True, f"Maildrop {self.summary()}")

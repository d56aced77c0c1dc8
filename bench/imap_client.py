"""The IMAP benchmark's own asyncio client: response framing, pipelining, IDLE.

Written here rather than taken from a library because the client must cost far less
than the servers it measures: imaplib blocks, and the asyncio libraries run a regular
expression over every response line. This one only frames: it finds each line's CRLF
with ``bytes.find``, and when a line ends in ``{n}`` it skips the n octets of the
literal without looking at them, so a 10,000-message FETCH costs the client one scan
of the bytes. It understands just enough of the responses for the benchmark's checks
(tags and status, FETCH UIDs, SEARCH results), and that parsing happens after the
clock stops.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from _common import BenchError

READ_SIZE = 1 << 18
_COMPACT_AT = 1 << 16


class ImapError(BenchError):
    """The server answered something the benchmark did not expect."""


@dataclass
class Completion:
    """A command's tagged completion and the untagged responses that came before it."""

    tag: bytes
    status: bytes  # OK, NO or BAD
    line: bytes
    untagged: list[bytes] = field(default_factory=list)


def client_tls_context() -> ssl.SSLContext:
    """One context for every connection (building one per connection costs more than
    the handshake): no verification, the servers use a throwaway certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapClient:
    """One IMAP connection. `send` returns the tag; `complete` reads up to the next
    tagged response; `command` does both and insists on OK."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = bytearray()
        self._pos = 0  # start of the record being framed
        self._seg = 0  # start of the record's current line (after its last literal)
        self._scan = 0  # where to look for the next CRLF
        self._tags = 0
        self.greeting = b""

    @classmethod
    async def connect(
        cls, host: str, port: int, context: ssl.SSLContext | None, timeout: float = 60.0
    ) -> ImapClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout
        )
        client = cls(reader, writer)
        client.greeting = await asyncio.wait_for(client.record(), timeout)
        if not client.greeting.startswith(b"* OK"):
            writer.close()
            raise ImapError(f"unexpected IMAP greeting {client.greeting[:80]!r}")
        return client

    # ------------------------------------------------------------------ framing

    async def record(self) -> bytes:
        """The next response: one line, with the literals it announces inside it."""
        while True:
            record = self._take()
            if record is not None:
                return record
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ImapError("the server closed the connection")
            if self._pos > _COMPACT_AT and self._pos * 2 > len(self._buf):
                del self._buf[: self._pos]
                self._seg -= self._pos
                self._scan -= self._pos
                self._pos = 0
            self._buf += data

    def _take(self) -> bytes | None:
        buf, seg, scan = self._buf, self._seg, self._scan
        while True:
            eol = buf.find(b"\r\n", scan)
            if eol < 0:
                self._seg, self._scan = seg, max(scan, len(buf) - 1)
                return None
            if eol > seg and buf[eol - 1] == 0x7D:  # "}": is it a literal's {n}?
                brace = buf.rfind(b"{", seg, eol)
                digits = buf[brace + 1 : eol - 1] if brace >= 0 else b""
                if digits.isdigit():
                    seg = scan = eol + 2 + int(digits)
                    if scan > len(buf):
                        self._seg, self._scan = seg, scan
                        return None
                    continue
            record = bytes(buf[self._pos : eol])
            self._pos = self._seg = self._scan = eol + 2
            return record

    # ------------------------------------------------------------------ commands

    def send(self, command: str) -> bytes:
        self._tags += 1
        tag = b"A%d" % self._tags
        self.writer.write(tag + b" " + command.encode() + b"\r\n")
        return tag

    async def complete(self) -> Completion:
        untagged: list[bytes] = []
        while True:
            record = await self.record()
            if record.startswith(b"* "):
                untagged.append(record)
                continue
            if record.startswith(b"+"):
                raise ImapError(f"unexpected continuation {record[:80]!r}")
            tag, _, rest = record.partition(b" ")
            return Completion(tag, rest.partition(b" ")[0].upper(), record, untagged)

    async def command(self, command: str) -> Completion:
        tag = self.send(command)
        return self._checked(await self.complete(), tag, command)

    @staticmethod
    def _checked(done: Completion, tag: bytes, command: str) -> Completion:
        if done.tag != tag:
            raise ImapError(f"{command[:40]!r}: completion {done.line[:80]!r} for another tag")
        if done.status != b"OK":
            raise ImapError(f"{command[:60]!r} answered {done.line[:120]!r}")
        return done

    async def pipeline(self, commands: Sequence[str], window: int) -> list[Completion]:
        """Send `commands` keeping up to `window` in flight; every one must end OK.

        Completions are returned as they come: a server may run pipelined commands in
        parallel (Dovecot does), so their untagged responses can interleave and their
        completions arrive in any order.
        """
        pending: dict[bytes, str] = {}
        todo = iter(commands)
        done: list[Completion] = []
        for command in todo:
            pending[self.send(command)] = command
            if len(pending) >= window:
                break
        while pending:
            completion = await self.complete()
            command = pending.pop(completion.tag, "")
            done.append(self._checked(completion, completion.tag if command else b"", command))
            following = next(todo, None)
            if following is not None:
                pending[self.send(following)] = following
        return done

    async def login(self, user: str, password: str) -> Completion:
        return await self.command(f"LOGIN {quoted(user)} {quoted(password)}")

    async def select(self, mailbox: str, condstore: bool = False) -> Completion:
        return await self.command(
            f"SELECT {quoted(mailbox)}" + (" (CONDSTORE)" if condstore else "")
        )

    async def idle(self) -> bytes:
        """Enter IDLE; returns once the server has said it is idling."""
        tag = self.send("IDLE")
        while True:
            record = await self.record()
            if record.startswith(b"+"):
                return tag
            if not record.startswith(b"* "):
                raise ImapError(f"IDLE answered {record[:80]!r}")

    async def done(self, tag: bytes) -> Completion:
        self.writer.write(b"DONE\r\n")
        return self._checked(await self.complete(), tag, "IDLE")

    async def logout(self) -> None:
        try:
            await self.command("LOGOUT")
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------- response facts


def fetch_uids(untagged: Iterable[bytes]) -> list[int]:
    """The UIDs of the FETCH responses (the UID item is near the start of each)."""
    uids = []
    for record in untagged:
        head = record[:160]
        if b" FETCH (" not in head:
            continue
        at = head.find(b"UID ", head.find(b" FETCH (") + 7)
        if at < 0:
            continue
        end = at + 4
        while end < len(head) and 48 <= head[end] <= 57:
            end += 1
        uids.append(int(head[at + 4 : end]))
    return uids


def fetch_numbers(untagged: Iterable[bytes]) -> set[int]:
    """The message numbers of the FETCH responses (with or without a UID item)."""
    return {
        int(r[2 : r.index(b" ", 2)])
        for r in untagged
        if r[2:].lstrip(b"0123456789")[:7] == b" FETCH "
    }


def literal_sizes(untagged: Iterable[bytes]) -> dict[int, int]:
    """UID -> size of the (first) literal of each FETCH response that has both."""
    sizes = {}
    for record in untagged:
        brace = record.find(b"{")
        end = record.find(b"}\r\n", brace)
        for uid in fetch_uids([record]):
            if brace >= 0 and end > brace:
                sizes[uid] = int(record[brace + 1 : end])
    return sizes


def search_uids(untagged: Iterable[bytes]) -> list[int]:
    """The numbers of the SEARCH response (a CONDSTORE ``(MODSEQ n)`` left aside)."""
    found: list[int] = []
    for record in untagged:
        if record.startswith(b"* SEARCH"):
            found += (int(t) for t in record[8:].partition(b"(")[0].split())
    return found


def response_code(line: bytes, name: bytes) -> bytes | None:
    """The argument of a ``[NAME arg]`` response code in `line`, e.g. HIGHESTMODSEQ."""
    at = line.find(b"[" + name + b" ")
    if at < 0:
        return None
    start = at + len(name) + 2
    return line[start : line.index(b"]", start)]


def count_untagged(untagged: Iterable[bytes], word: bytes) -> int:
    """How many ``* n WORD`` responses (EXPUNGE, EXISTS, FETCH) there are."""
    needle = b" " + word
    return sum(1 for r in untagged if r[2:].lstrip(b"0123456789").startswith(needle))

"""Message body intake for the SMTP core: DATA (dot-terminated) and BDAT (counted chunks).

Only `<CRLF>.<CRLF>` ends DATA. A bare LF or bare CR next to a dot (`\\n.\\n`,
`\\n.\\r\\n`, `\\r\\n.\\n`, `\\r.\\r`, ...) is content, never the end: a server that
ends DATA at such a sequence lets one message smuggle another past the relay that
sent it. Bare CR and bare LF inside the content are then either normalised to
CRLF ("normalize", the default, so what is stored always has CRLF line endings)
or cause the message to be refused with 550 5.6.0 ("reject"). The same policy
applies to BDAT chunks, which are otherwise taken as raw bytes without unstuffing.

Dot-stuffing is undone per RFC 5321 section 4.5.2: a leading period is removed
from every CRLF-delimited line. Work is done on whole chunks with `find`,
`rfind` and `replace`, never line by line. A message over the size limit or with
a line over the line limit is not buffered further: intake keeps consuming up to
its end, then the reader reports the reply that refuses it.
"""

from __future__ import annotations

from typing import Literal

from poczta.smtp.replies import BARE_LINE_ENDING, DATA_LINE_TOO_LONG, MESSAGE_TOO_BIG, Reply

BareLineEndings = Literal["normalize", "reject"]

_END = b"\r\n.\r\n"
_KEEP = len(_END) - 1  # bytes a split end marker can leave at a chunk's tail


class _Intake:
    """Shared bookkeeping: size and line-length limits, discarding once refused."""

    def __init__(self, max_size: int, max_line: int, prefix: bytes) -> None:
        self._max_size = max_size
        self._max_line = max_line
        self._buf = bytearray(prefix)
        self._prefix = len(prefix)
        self._line_start = len(prefix)  # where the line being scanned began
        self._dropped = 0  # bytes thrown away after refusal
        self.refusal: Reply | None = None

    def _scan_lines(self, upto: int) -> None:
        """Check that every line before `upto` fits; one step per window, not per line."""
        buf, limit, pos = self._buf, self._max_line, self._line_start
        while pos + limit <= upto:
            lf = buf.rfind(b"\n", pos, pos + limit)
            if lf < 0:
                self._refuse(DATA_LINE_TOO_LONG)
                return
            pos = lf + 1
        self._line_start = pos

    def _check(self, upto: int) -> None:
        if self.refusal is not None:
            return
        if upto - self._prefix > self._max_size + len(_END):
            self._refuse(MESSAGE_TOO_BIG)
            return
        self._scan_lines(upto)

    def _refuse(self, reply: Reply) -> None:
        self.refusal = reply

    def _discard(self, keep: int) -> None:
        """Once refused, keep only the last `keep` bytes (a possibly split end marker)."""
        cut = len(self._buf) - keep
        if cut > 0:
            self._dropped += cut
            del self._buf[:cut]
            self._line_start = 0


def finish_body(content: bytes, policy: BareLineEndings) -> bytes | Reply:
    """Apply the bare CR / bare LF policy to a complete CRLF-framed message."""
    crlf = content.count(b"\r\n")
    if content.count(b"\n") == crlf and content.count(b"\r") == crlf:
        return content
    if policy == "reject":
        return BARE_LINE_ENDING
    return content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class DotReader(_Intake):
    """Collects DATA content up to `<CRLF>.<CRLF>`.

    The buffer starts with a virtual CRLF (the end of the DATA command line), so
    an empty message `.<CRLF>` and a first line starting with a dot work out.
    """

    def __init__(self, max_size: int, max_line: int) -> None:
        super().__init__(max_size, max_line, b"\r\n")
        self._end: int | None = None

    def feed(self, data: bytes) -> bytes | None:
        """Take bytes; once the end marker is seen, return the bytes after it."""
        buf = self._buf
        start = max(0, len(buf) - _KEEP)
        buf += data
        idx = buf.find(_END, start)
        if idx < 0:
            self._check(len(buf))
            if self.refusal is not None:
                self._discard(_KEEP)
            return None
        self._check(idx + 2)
        self._end = idx + 2
        return bytes(buf[idx + len(_END) :])

    def result(self, policy: BareLineEndings, max_size: int) -> bytes | Reply:
        """The unstuffed message, or the reply refusing it. Call after `feed` finished."""
        if self.refusal is not None:
            return self.refusal
        assert self._end is not None
        raw = bytes(self._buf[: self._end])
        content = raw.replace(b"\r\n.", b"\r\n")[2:] if b"\r\n." in raw else raw[2:]
        if len(content) > max_size:
            return MESSAGE_TOO_BIG
        return finish_body(content, policy)


class ChunkReader(_Intake):
    """Collects BDAT chunks (RFC 3030): raw bytes, counted, no unstuffing.

    A message whose last chunk does not end in CRLF gets one, so that every message
    the core hands over ends in CRLF whichever command carried it.
    """

    def __init__(self, max_size: int, max_line: int) -> None:
        super().__init__(max_size, max_line, b"")
        self.remaining = 0

    @property
    def size(self) -> int:
        """Bytes received so far over all chunks."""
        return len(self._buf) + self._dropped

    def expect(self, count: int) -> None:
        """A BDAT command announced `count` more bytes."""
        self.remaining = count

    def feed(self, data: bytes) -> bytes:
        """Take up to `remaining` bytes of `data`; return what is left over."""
        take = min(self.remaining, len(data))
        self._buf += data[:take] if take < len(data) else data
        self.remaining -= take
        self._check(len(self._buf))
        if self.refusal is not None:
            self._discard(0)
        return data[take:] if take < len(data) else b""

    def refuse(self) -> None:
        """Throw the transaction's chunks away (a BDAT out of sequence)."""
        self._refuse(Reply(503, "5.5.1", "Bad sequence of commands"))
        self._discard(0)

    def result(self, policy: BareLineEndings) -> bytes | Reply:
        """The whole message, or the reply refusing it."""
        if self.refusal is not None:
            return self.refusal
        if len(self._buf) > self._max_size:
            return MESSAGE_TOO_BIG
        content = finish_body(bytes(self._buf), policy)
        if isinstance(content, bytes) and content and not content.endswith(b"\r\n"):
            content += b"\r\n"  # every message handed over ends with CRLF
        return content

"""What the SMTP client reads from a server: replies parsed from bytes, and the EHLO extensions.

`ReplyReader` turns the server's bytes into `Reply` values (the type the server core
writes, so one reply has one shape everywhere) or one `ReplyError`, after which the
stream is out of step and the reader takes nothing more. Rules:

- A line ends at LF; a CR before it is dropped, so bare LF is tolerated.
- A line is three digits, the first 2 to 5, then `-` (more lines follow), a space or
  nothing (the last line). Anything else is garbage and a protocol error. Postfix
  skips such lines with a warning; poczta does not, because with PIPELINING a skipped
  line can pair the next reply with the wrong command (its own source says so).
- Every line of a multi-line reply must carry the same code (RFC 5321 4.2.1). Postfix
  takes the last line's code; poczta calls a mismatch a protocol error, since it cannot
  tell which of the two codes the server meant.
- Lines are capped (`max_line` octets), and so are the lines of one reply and their
  total size: a server that sends a 10 MB reply gets a protocol error after the cap,
  not a 10 MB buffer.
- The enhanced status code (RFC 2034, RFC 3463) is taken from the first line when its
  class digit matches the reply code's (a mismatched one is text, as Postfix treats it)
  and removed from every line that repeats it. 3xx replies carry none.
- Text is decoded as UTF-8 with replacement, and control characters become `?`, so a
  reply copied into a log line or a bounce cannot break it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from poczta.smtp.replies import Reply

_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|$)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_ASCII_CONTROL = bytes(
    ord("?") if b <= 0x08 or 0x0A <= b <= 0x1F or b == 0x7F else b for b in range(256)
)
_SEPARATORS = (b" ", b"-", b"")


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """Caps on what one server reply may be."""

    max_line: int = 2048
    max_lines: int = 200
    max_size: int = 65536


@dataclass(frozen=True, slots=True)
class ReplyError:
    """The server's bytes were no SMTP reply; `reason` says how."""

    reason: str


def _clean(raw: bytes) -> str:
    if raw.isascii():  # the usual reply: one table lookup per octet
        return raw.translate(_ASCII_CONTROL).decode("ascii")
    return _CONTROL.sub("?", raw.decode("utf-8", "replace"))


_CLASS_PREFIX = {2: "2.", 4: "4.", 5: "5."}  # how an enhanced code of the reply's class starts


def _build(code: int, texts: list[str]) -> Reply:
    klass = _CLASS_PREFIX.get(code // 100)
    m = _ENHANCED.match(texts[0]) if klass and texts[0].startswith(klass) else None
    if m is None:
        return Reply(code, None, texts[0], tuple(texts[1:]))
    enhanced = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
    prefix = m.group(0).rstrip(" ")
    texts = [t[len(prefix) :].lstrip(" ") if t.startswith(prefix) else t for t in texts]
    return Reply(code, enhanced, texts[0], tuple(texts[1:]))


class ReplyReader:
    """Incremental reply parser: `feed` bytes, take complete replies with `replies`."""

    def __init__(self, limits: ReplyLimits | None = None) -> None:
        self.limits = limits or ReplyLimits()
        self._buf = bytearray()
        self._code: int | None = None
        self._texts: list[str] = []
        self._size = 0
        self._ready: list[Reply | ReplyError] = []
        self.failed = False

    @property
    def partial(self) -> bool:
        """True while part of a reply has arrived but not its last line."""
        return bool(self._buf) or self._code is not None

    def feed(self, data: bytes) -> None:
        """Take bytes from the server, at most one line's cap past the last line end."""
        step = self.limits.max_line + 1
        for start in range(0, len(data), step):
            if self.failed:
                return
            self._buf += data[start : start + step]
            self._lines()

    def replies(self) -> Iterator[Reply | ReplyError]:
        """The complete replies fed so far, each once; a `ReplyError` is always the last."""
        while self._ready:
            yield self._ready.pop(0)

    def _fail(self, reason: str) -> None:
        self.failed = True
        self._buf.clear()
        self._ready.append(ReplyError(reason))

    def _lines(self) -> None:
        buf, cap = self._buf, self.limits.max_line
        while not self.failed:
            lf = buf.find(b"\n")
            if lf < 0:
                if len(buf) > cap:
                    self._fail(f"reply line longer than {cap} octets")
                return
            if lf + 1 > cap + 1:
                self._fail(f"reply line longer than {cap} octets")
                return
            line = bytes(buf[:lf])
            del buf[: lf + 1]
            self._line(line[:-1] if line.endswith(b"\r") else line)

    def _line(self, line: bytes) -> None:
        digits, separator = line[:3], line[3:4]
        if not (
            len(digits) == 3
            and digits.isdigit()
            and b"2" <= digits[:1] <= b"5"
            and separator in _SEPARATORS
        ):
            self._fail(f"malformed reply line {_clean(line[:60])!r}")
            return
        code = int(digits)
        if self._code is not None and code != self._code:
            self._fail(f"reply code changed from {self._code} to {code} within one reply")
            return
        self._code = code
        self._texts.append(_clean(line[4:]))
        self._size += len(line)
        limits = self.limits
        if len(self._texts) > limits.max_lines or self._size > limits.max_size:
            self._fail(f"reply longer than {limits.max_lines} lines or {limits.max_size} octets")
            return
        if separator != b"-":
            self._ready.append(_build(code, self._texts))
            self._code, self._texts, self._size = None, [], 0


# ------------------------------------------------------------------ EHLO extensions


@dataclass(frozen=True, slots=True)
class Extensions:
    """The service extensions a server announced in its EHLO reply (none after HELO)."""

    starttls: bool = False
    pipelining: bool = False
    size_offered: bool = False
    size: int | None = None  # the server's limit; None when unannounced or 0 (no limit)
    eightbitmime: bool = False
    smtputf8: bool = False
    chunking: bool = False
    dsn: bool = False
    enhancedstatuscodes: bool = False
    auth: tuple[str, ...] = ()

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Extensions:
        """Read the keywords of an EHLO reply; its first line is the server's name."""
        return cls.from_lines(reply.extra)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> Extensions:
        flags: dict[str, bool] = {}
        size: int | None = None
        auth: list[str] = []
        for line in lines:
            keyword, _, rest = line.strip().partition(" ")
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):  # the pre-RFC 4954 form some servers still send
                keyword, rest = "AUTH", keyword[5:] + " " + rest
            if keyword == "SIZE":
                flags["size_offered"] = True
                value = rest.strip()
                size = int(value) if value.isdigit() and value.isascii() and int(value) else None
            elif keyword == "AUTH":
                auth.extend(m for m in rest.upper().split() if m not in auth)
            elif keyword in _FLAGS:
                flags[_FLAGS[keyword]] = True
        return cls(size=size, auth=tuple(auth), **flags)


_FLAGS = {
    "STARTTLS": "starttls",
    "PIPELINING": "pipelining",
    "8BITMIME": "eightbitmime",
    "SMTPUTF8": "smtputf8",
    "CHUNKING": "chunking",
    "DSN": "dsn",
    "ENHANCEDSTATUSCODES": "enhancedstatuscodes",
}

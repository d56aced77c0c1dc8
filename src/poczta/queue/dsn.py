"""Delivery status notifications (RFC 3464, 3461): bounce, delay and success reports, without I/O.

`build_report(report, now)` returns the whole report message, header and body with
CRLF line ends, to be sent from the null sender `<>` to `report.sender`; or None when
nothing may be sent:

- never to the null sender (that is how reports and other automatic mail are sent,
  so answering it would start a loop);
- never about a message that is itself a delivery report (`multipart/report` with
  `report-type=delivery-status`, or its RFC 6533 `global-delivery-status` form) or
  that says it was sent automatically (`Auto-Submitted` other than `no`, RFC 3834).

NOTIFY is the caller's: it passes only the recipients the sender asked to hear about
(RFC 3461 4.1: none for NEVER; `failed` for FAILURE or no NOTIFY, `delayed` for DELAY,
`delivered` / `relayed` for SUCCESS), and `build_report` reports every recipient it is
given. One report may mix actions; its Subject tells the worst news.

What of the original comes back (RFC 3461 4.3, RFC 6522):

- The whole message only when some recipient failed and the sender asked for it with
  RET=FULL. Without RET poczta returns the headers: they are enough to tell which
  message it was, the sender's mail client keeps its own copy, and a bounce carrying
  every attachment back doubles the harm of backscatter. A report without a failure
  carries the headers only (RFC 3461 4.3: the message SHOULD NOT be returned then).
- A message over `ORIGINAL_SIZE_CAP` octets is returned as headers only, and so is one
  whose content could not travel in an 8bit MIME part unchanged (a NUL octet, a line
  over 998 octets). The readable part says which it was.
- An ASCII header is returned as `message/rfc822` or `text/rfc822-headers`; a body
  with 8-bit octets under an ASCII header stays `message/rfc822` with
  `Content-Transfer-Encoding: 8bit` (RFC 2046 5.2.1 allows it, and far more mail
  clients show message/rfc822 than message/global). A UTF-8 header (an SMTPUTF8
  message) is returned as `message/global` / `message/global-headers` (RFC 6533). A
  header with 8-bit octets that are not UTF-8 is returned as headers only, with
  U+FFFD for the bad octets, as message/global-headers.
- Addresses that are not ASCII are typed `utf-8` with RFC 6533 escapes, and then (or
  when a remote answer holds UTF-8) the status part is `message/global-delivery-status`.
  A report with any 8-bit part needs 8BITMIME (and SMTPUTF8 for UTF-8 headers or
  addresses) to leave the server; the caller sees it in the bytes, as for any message.

Everything that came from outside, above all the remote server's answer, is made one
line of printable text before it is used: line breaks and other whitespace become one
space, other control characters `?`; it is cut at `DIAGNOSTIC_MAX` characters. Fields
of the status part are folded at spaces before 78 columns; a word longer than a safe
line is split (unfolding then shows a space inside it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from poczta.message.header import HeaderSection, split_header
from poczta.queue.dsn_text import explanation, report_date, subject
from poczta.smtp.client_body import encode_utf8_addr
from poczta.trace import header_text

__all__ = [
    "ACTIONS",
    "ORIGINAL_SIZE_CAP",
    "Report",
    "ReportedRecipient",
    "build_report",
    "is_automatic",
]

ORIGINAL_SIZE_CAP = 1_000_000  # octets; a larger original is returned as headers only
DIAGNOSTIC_MAX = 2_000  # characters of a remote answer kept
_VALUE_MAX = 1_000  # characters of any other value (an address, an id, a host)
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

_SOFT_WIDTH = 78
_PIECE_OCTETS = 900  # the longest unbroken run in a field line, well under 998
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_TYPED = re.compile(r"([A-Za-z][A-Za-z0-9-]*) ?; ?(.*)", re.DOTALL)
_LINE_END = re.compile(rb"\r\n|\r|\n")
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>")
_DEFAULT_STATUS = {"failed": "5.0.0", "delayed": "4.0.0"}


@dataclass(frozen=True)
class ReportedRecipient:
    """One recipient to report on, and what became of it."""

    address: str
    original: str | None  # ORCPT address, when the client gave one
    action: str  # "failed" | "delayed" | "delivered" | "relayed" (or "expanded")
    status: str  # enhanced status, e.g. "5.1.1"
    diagnostic: str | None  # "smtp; 550 5.1.1 <x@y>: user unknown"
    remote_mta: str | None  # "dns; mx.example.net"
    last_attempt: datetime | None
    retry_until: datetime | None  # for "delayed"


@dataclass(frozen=True)
class Report:
    """A report to send about one queued message."""

    reporting_mta: str  # our hostname
    sender: str  # the envelope sender the report goes to ("" = null sender)
    envid: str | None
    ret: str | None  # "FULL" | "HDRS" | None (None: headers only, see above)
    arrival: datetime
    recipients: tuple[ReportedRecipient, ...]
    original: bytes  # the original message as queued


@dataclass(frozen=True)
class _Part:
    headers: str  # the part's header lines, each ending in CRLF
    body: bytes  # ends in CRLF

    @property
    def eight_bit(self) -> bool:
        return not self.body.isascii()


def build_report(report: Report, now: datetime) -> bytes | None:
    """The report message about `report`, or None when none may be sent (see above)."""
    if not report.sender or not report.recipients:
        return None
    header = split_header(report.original)
    if is_automatic(header):
        return None
    for recipient in report.recipients:
        if recipient.action not in ACTIONS:
            raise ValueError(f"unknown DSN action {recipient.action!r}")
    hostname = one_line(report.reporting_mta, _VALUE_MAX)
    returned, note = _returned(report, header)
    status = _status_part(report, hostname)
    text = _text_part(report, hostname, note, now)
    parts = (text, status, returned)
    actions = [r.action for r in report.recipients]
    return _assemble(report, header, hostname, subject(actions), parts, now)


def is_automatic(header: HeaderSection) -> bool:
    """Whether a message with this header gets no report: it is a delivery report
    itself, or says it was sent automatically (RFC 3834)."""
    for field in header.named("auto-submitted"):
        keyword = field.text().split(";")[0].split("(")[0].strip().lower()
        if keyword and keyword != "no":
            return True
    for field in header.named("content-type"):
        value = field.text().lower()
        if value.startswith("multipart/report") and re.search(
            r"report-type\s*=\s*\"?\s*(global-)?delivery-status\b", value
        ):
            return True
    return False


def one_line(value: str, limit: int) -> str:
    """`value` as one line of printable text of at most `limit` characters: whitespace
    runs (line breaks included) become one space, other control characters `?`."""
    text = header_text(" ".join(value.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the delivery-status part ----------------------------------------------------


def _pieces(word: str) -> list[str]:
    """`word` cut into runs of at most `_PIECE_OCTETS` octets of UTF-8."""
    if len(word) * 4 <= _PIECE_OCTETS or len(word.encode()) <= _PIECE_OCTETS:
        return [word]
    out: list[str] = []
    run: list[str] = []
    size = 0
    for char in word:
        octets = len(char.encode())
        if size + octets > _PIECE_OCTETS:
            out.append("".join(run))
            run, size = [], 0
        run.append(char)
        size += octets
    out.append("".join(run))
    return out


def field(name: str, value: str) -> str:
    """`name: value` folded at spaces before 78 columns, ending in CRLF; `value` is one
    line already (`one_line`)."""
    lines: list[str] = []
    line = f"{name}:"
    first = True
    for word in value.split(" "):
        for piece in _pieces(word):
            if not first and len(line) + 1 + len(piece) > _SOFT_WIDTH:
                lines.append(line)
                line = " " + piece
            else:
                line += " " + piece
            first = False
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _typed(value: str, default_type: str, limit: int) -> str | None:
    """A `type; text` value (Remote-MTA, Diagnostic-Code), typed `default_type` when it
    names no type; None when nothing is left of it."""
    text = one_line(value, limit)
    match = _TYPED.fullmatch(text)
    if match is not None:
        kind, text = match.group(1), match.group(2)
    else:
        kind = default_type
    return f"{kind}; {text}" if text else None


def _untyped(value: str, limit: int) -> str:
    """The text of a `type; text` value, for people."""
    text = one_line(value, limit)
    match = _TYPED.fullmatch(text)
    return match.group(2) if match is not None else text


def typed_address(address: str) -> str:
    """An address as a DSN address field: `rfc822; a@b`, or RFC 6533 `utf-8; ...`."""
    text = one_line(address, _VALUE_MAX)
    if text.isascii():
        return f"rfc822; {text}"
    return f"utf-8; {encode_utf8_addr(text)}"


def _per_message(report: Report, hostname: str) -> str:
    fields = []
    if report.envid:
        # RFC 3464 2.2.1: the ENVID as the client meant it, without its xtext encoding.
        fields.append(field("Original-Envelope-Id", one_line(report.envid, _VALUE_MAX)))
    fields.append(field("Reporting-MTA", f"dns; {hostname}"))
    fields.append(field("Arrival-Date", report_date(report.arrival)))
    return "".join(fields)


def _status(recipient: ReportedRecipient) -> str:
    if _STATUS.fullmatch(recipient.status):
        return recipient.status
    return _DEFAULT_STATUS.get(recipient.action, "2.0.0")


def _per_recipient(recipient: ReportedRecipient) -> str:
    fields = []
    if recipient.original:
        fields.append(field("Original-Recipient", typed_address(recipient.original)))
    fields.append(field("Final-Recipient", typed_address(recipient.address)))
    fields.append(field("Action", recipient.action))
    fields.append(field("Status", _status(recipient)))
    remote = _typed(recipient.remote_mta or "", "dns", _VALUE_MAX)
    if remote:
        fields.append(field("Remote-MTA", remote))
    diagnostic = _typed(recipient.diagnostic or "", "smtp", DIAGNOSTIC_MAX)
    if diagnostic:
        fields.append(field("Diagnostic-Code", diagnostic))
    if recipient.last_attempt is not None:
        fields.append(field("Last-Attempt-Date", report_date(recipient.last_attempt)))
    if recipient.action == "delayed" and recipient.retry_until is not None:
        fields.append(field("Will-Retry-Until", report_date(recipient.retry_until)))
    return "".join(fields)


def _status_part(report: Report, hostname: str) -> _Part:
    blocks = [_per_message(report, hostname)]
    blocks += [_per_recipient(r) for r in report.recipients]
    text = "\r\n".join(blocks)
    if text.isascii():
        return _Part("Content-Type: message/delivery-status\r\n", text.encode())
    headers = "Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n"
    return _Part(headers, text.encode())


# --- the readable part -------------------------------------------------------------


def _text_part(report: Report, hostname: str, note: str, now: datetime) -> _Part:
    shown = [
        (
            replace(r, address=one_line(r.address, _VALUE_MAX), status=_status(r)),
            _untyped(r.diagnostic, DIAGNOSTIC_MAX) if r.diagnostic else None,
            _untyped(r.remote_mta, _VALUE_MAX) if r.remote_mta else None,
        )
        for r in report.recipients
    ]
    text = explanation(hostname, shown, note, now).replace("\n", "\r\n")
    if text.isascii():
        headers = "Content-Type: text/plain; charset=us-ascii\r\n"
    else:
        headers = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    return _Part(headers + "Content-Description: Notification\r\n", text.encode())


# --- the original ----------------------------------------------------------------


def _crlf(data: bytes) -> bytes:
    """`data` with every line end as CRLF and a CRLF at the end."""
    text = _LINE_END.sub(b"\r\n", data)
    return text if text.endswith(b"\r\n") or not text else text + b"\r\n"


def _fits_8bit(data: bytes) -> bool:
    """Whether CRLF-ended `data` can travel in a 7bit or 8bit MIME part unchanged."""
    return b"\x00" not in data and all(len(line) <= 998 for line in data.split(b"\r\n"))


def _header_bytes(report: Report, header: HeaderSection) -> bytes:
    data = report.original
    head = data[: header.size] if header.has_body else data[:ORIGINAL_SIZE_CAP]
    return _crlf(head.rstrip(b"\r\n")).replace(b"\x00", b"?")


def _returned(report: Report, header: HeaderSection) -> tuple[_Part, str]:
    """The part carrying the original (whole or its header), and a sentence saying so."""
    head = _header_bytes(report, header)
    try:
        head.decode("utf-8")
        utf8_header = not head.isascii()
        clean_header = True
    except UnicodeDecodeError:
        utf8_header, clean_header = True, False
    failed = any(r.action == "failed" for r in report.recipients)
    if failed and report.ret == "FULL":
        whole = _crlf(report.original) if len(report.original) <= ORIGINAL_SIZE_CAP else b""
        if whole and clean_header and _fits_8bit(whole):
            kind = "message/global" if utf8_header else "message/rfc822"
            note = "Your message is attached to this report."
            return _original_part(kind, "Undelivered Message", whole), note
        if not whole:
            note = (
                f"Your message was larger than {ORIGINAL_SIZE_CAP // 1_000_000} MB, too "
                "large to send back whole; its header (the sender, recipients, subject "
                "and date) is attached to this report."
            )
        else:
            note = (
                "Your message could not be sent back whole; its header (the sender, "
                "recipients, subject and date) is attached to this report."
            )
    else:
        note = (
            "The header of your message (the sender, recipients, subject and date) is "
            "attached to this report, so that you can tell which message it was."
        )
    if not clean_header:
        head = head.decode("utf-8", "replace").encode()
    kind = "message/global-headers" if utf8_header else "text/rfc822-headers"
    return _original_part(kind, "Undelivered Message Headers", head), note


def _original_part(kind: str, description: str, body: bytes) -> _Part:
    headers = f"Content-Type: {kind}\r\nContent-Description: {description}\r\n"
    if not body.isascii():
        headers += "Content-Transfer-Encoding: 8bit\r\n"
    return _Part(headers, body)


# --- the message -----------------------------------------------------------------


def _seed(report: Report, now: datetime) -> str:
    digest = hashlib.sha256()
    for value in (report.reporting_mta, report.sender, now.isoformat(), report.envid or ""):
        digest.update(value.encode("utf-8", "replace") + b"\0")
    for r in report.recipients:
        digest.update(f"{r.address}\0{r.action}\0{r.status}\0".encode("utf-8", "replace"))
    digest.update(hashlib.sha256(report.original).digest())
    return digest.hexdigest()


def _boundary(seed: str, parts: Sequence[_Part]) -> str:
    """A boundary that no line of any part starts with (RFC 2046 5.1.1)."""
    attempt = 0
    while True:
        boundary = f"=_report_{seed[attempt : attempt + 24]}_{attempt}"
        marker = b"--" + boundary.encode()
        if not any(marker in part.body for part in parts):
            return boundary
        attempt += 1


def _references(header: HeaderSection) -> list[str]:
    """In-Reply-To and References naming the original, so mail clients thread them."""
    found = header.first("message-id")
    if found is None:
        return []
    match = _MESSAGE_ID.search(found.text())
    if match is None:
        return []
    return [f"In-Reply-To: {match.group(0)}", f"References: {match.group(0)}"]


def _assemble(
    report: Report,
    header: HeaderSection,
    hostname: str,
    title: str,
    parts: Sequence[_Part],
    now: datetime,
) -> bytes:
    seed = _seed(report, now)
    boundary = _boundary(seed, parts)
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{one_line(report.sender, _VALUE_MAX)}>",
        f"Subject: {title}",
        f"Date: {report_date(now)}",
        f"Message-ID: <{stamp}.{seed[:20]}@{hostname}>",
        *_references(header),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if any(part.eight_bit for part in parts):
        lines.append("Content-Transfer-Encoding: 8bit")
    out = [("\r\n".join(lines) + "\r\n\r\n").encode()]
    out.append(b"This is a MIME-encapsulated message.\r\n")
    delimiter = f"\r\n--{boundary}\r\n".encode()
    for part in parts:
        out += [delimiter, part.headers.encode(), b"\r\n", part.body]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)

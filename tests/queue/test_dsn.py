"""Delivery reports as the sender's mail client reads them: parsed with `email`, field by field."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.queue.dsn import ORIGINAL_SIZE_CAP, Report, ReportedRecipient, build_report

NOW = datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)
ARRIVAL = NOW - timedelta(hours=3)
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Lunch on Friday?\r\n"
    b"Message-ID: <lunch.1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
FAILED = ReportedRecipient(
    address="bob@example.net",
    original="Bob@Example.NET",
    action="failed",
    status="5.1.1",
    diagnostic="smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
    remote_mta="dns; mx.example.net",
    last_attempt=NOW - timedelta(minutes=1),
    retry_until=None,
)
DELAYED = ReportedRecipient(
    address="carol@example.com",
    original=None,
    action="delayed",
    status="4.2.2",
    diagnostic="smtp; 452 4.2.2 Mailbox full, try again later",
    remote_mta="dns; mail.example.com",
    last_attempt=NOW - timedelta(minutes=2),
    retry_until=NOW + timedelta(days=4),
)
DELIVERED = ReportedRecipient(
    address="dave@example.com",
    original=None,
    action="delivered",
    status="2.0.0",
    diagnostic="smtp; 250 2.0.0 Ok: queued as 4F2A",
    remote_mta="dns; mail.example.com",
    last_attempt=NOW,
    retry_until=None,
)
REPORT = Report(
    reporting_mta="mx.example.org",
    sender="alice@example.org",
    envid="QQ314159",
    ret="FULL",
    arrival=ARRIVAL,
    recipients=(FAILED,),
    original=ORIGINAL,
)


def build(report: Report = REPORT) -> bytes:
    out = build_report(report, NOW)
    assert out is not None
    return out


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data)


def subparts(message: Message) -> list[Message]:
    """The parts of a multipart or message/* part."""
    payload = message.get_payload()
    assert isinstance(payload, list)
    parts = [part for part in payload if isinstance(part, Message)]
    assert len(parts) == len(payload)
    return parts


def raw_parts(data: bytes) -> list[tuple[Message, bytes]]:
    """The body parts of a report as (header, exact body bytes), split at the boundary."""
    boundary = parse(data).get_boundary()
    assert boundary
    pieces = data.split(b"\r\n--" + boundary.encode())
    assert pieces[-1] == b"--\r\n", "the closing delimiter ends the message"
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, _, body = piece[2:].partition(b"\r\n\r\n")
        parts.append((BytesHeaderParser().parsebytes(head + b"\r\n\r\n"), body))
    return parts


def unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def status_blocks(body: bytes) -> list[dict[str, str]]:
    """The groups of fields of a delivery-status body, unfolded."""
    blocks = body.split(b"\r\n\r\n")
    parsed = []
    for block in blocks:
        if not block.strip():
            continue
        fields = HeaderParser().parsestr(block.decode("utf-8") + "\r\n\r\n")
        assert not fields.defects, fields.defects
        keys = [k.lower() for k in fields]
        assert len(keys) == len(set(keys)), f"a field appears twice: {keys}"
        parsed.append({k.lower(): unfold(str(v)) for k, v in fields.items()})
    return parsed


def crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# --- the failure report ----------------------------------------------------------


def test_failure_report_header() -> None:
    message = parse(build())
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
    assert message["To"] == "<alice@example.org>"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert parsedate_to_datetime(message["Date"]) == NOW.replace(microsecond=0)
    assert re.fullmatch(r"<[^<>@\s]+@mx\.example\.org>", message["Message-ID"])
    assert message["In-Reply-To"] == "<lunch.1@example.org>"
    assert message["References"] == "<lunch.1@example.org>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    kinds = [part.get_content_type() for part in subparts(message)]
    assert kinds == ["text/plain", "message/delivery-status", "message/rfc822"]


def test_failure_report_status_fields() -> None:
    message = parse(build())
    status = subparts(message)[1]
    python_blocks = subparts(status)
    assert len(python_blocks) == 2  # per message, one recipient
    per_message, recipient = status_blocks(raw_parts(build())[1][1])
    assert per_message == {
        "original-envelope-id": "QQ314159",
        "reporting-mta": "dns; mx.example.org",
        "arrival-date": per_message["arrival-date"],
    }
    assert parsedate_to_datetime(per_message["arrival-date"]) == ARRIVAL
    assert parsedate_to_datetime(recipient.pop("last-attempt-date")) == FAILED.last_attempt
    assert recipient == {
        "original-recipient": "rfc822; Bob@Example.NET",
        "final-recipient": "rfc822; bob@example.net",
        "action": "failed",
        "status": "5.1.1",
        "remote-mta": "dns; mx.example.net",
        "diagnostic-code": FAILED.diagnostic,
    }


def test_full_original_is_returned_unchanged() -> None:
    parts = raw_parts(build())
    header, body = parts[2]
    assert header.get_content_type() == "message/rfc822"
    assert header["Content-Transfer-Encoding"] is None
    assert body == ORIGINAL
    returned = subparts(subparts(parse(build()))[2])[0]
    assert returned["Subject"] == "Lunch on Friday?"


def test_readable_part_names_recipient_and_quotes_the_answer() -> None:
    header, body = raw_parts(build())[0]
    assert header.get_content_type() == "text/plain"
    text = body.decode("ascii")
    assert "<bob@example.net>" in text
    assert "could not be delivered" in text
    assert "does not exist" in text  # 5.1.1 in words
    assert "(mx.example.net) answered" in text
    assert "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown" in text
    assert "smtp;" not in text
    assert "attached" in text
    assert all(len(line) <= 78 for line in text.split("\r\n"))


@pytest.mark.parametrize("ret", ["HDRS", None])
def test_headers_only_unless_full(ret: str | None) -> None:
    data = build(replace(REPORT, ret=ret))
    header, body = raw_parts(data)[2]
    assert header.get_content_type() == "text/rfc822-headers"
    assert body == ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"
    assert b"Shall we meet" not in data


def test_no_envid_no_orcpt_no_remote() -> None:
    recipient = replace(FAILED, original=None, remote_mta=None, diagnostic=None)
    data = build(replace(REPORT, envid=None, recipients=(recipient,)))
    per_message, fields = status_blocks(raw_parts(data)[1][1])
    assert set(per_message) == {"reporting-mta", "arrival-date"}
    assert set(fields) == {"final-recipient", "action", "status", "last-attempt-date"}


def test_invalid_status_falls_back_to_the_action_class() -> None:
    data = build(replace(REPORT, recipients=(replace(FAILED, status="550"),)))
    assert status_blocks(raw_parts(data)[1][1])[1]["status"] == "5.0.0"


def test_unknown_action_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        build_report(replace(REPORT, recipients=(replace(FAILED, action="lost"),)), NOW)


# --- delay and success -------------------------------------------------------------


def test_delay_warning() -> None:
    data = build(replace(REPORT, recipients=(DELAYED,)))
    message = parse(data)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    parts = raw_parts(data)
    text = parts[0][1].decode()
    assert "not been delivered yet" in text
    assert "do not need to send the message again" in text
    assert "Sun, 05 May 2024" in text  # the retry limit, for people
    fields = status_blocks(parts[1][1])[1]
    assert fields["action"] == "delayed"
    assert parsedate_to_datetime(fields["will-retry-until"]) == DELAYED.retry_until
    # RET=FULL asks for the message back on failure only.
    assert parts[2][0].get_content_type() == "text/rfc822-headers"


def test_success_report() -> None:
    data = build(replace(REPORT, recipients=(DELIVERED,)))
    assert parse(data)["Subject"] == "Successful Mail Delivery Report"
    parts = raw_parts(data)
    assert "was delivered" in parts[0][1].decode()
    fields = status_blocks(parts[1][1])[1]
    assert (fields["action"], fields["status"]) == ("delivered", "2.0.0")
    assert "will-retry-until" not in fields
    assert parts[2][0].get_content_type() == "text/rfc822-headers"


def test_mixed_report_lists_each_recipient_once() -> None:
    data = build(replace(REPORT, recipients=(FAILED, DELAYED, DELIVERED)))
    assert parse(data)["Subject"] == "Undelivered Mail Returned to Sender"
    blocks = status_blocks(raw_parts(data)[1][1])
    finals = [b["final-recipient"] for b in blocks[1:]]
    assert finals == [f"rfc822; {r.address}" for r in (FAILED, DELAYED, DELIVERED)]
    text = raw_parts(data)[0][1].decode()
    for recipient in (FAILED, DELAYED, DELIVERED):
        assert text.split("\r\n").count(f"  <{recipient.address}>") == 1


# --- no report -----------------------------------------------------------------


def test_null_sender_gets_nothing() -> None:
    assert build_report(replace(REPORT, sender=""), NOW) is None


def test_no_recipients_nothing_to_say() -> None:
    assert build_report(replace(REPORT, recipients=()), NOW) is None


def test_no_report_about_a_report() -> None:
    bounce = build()
    assert build_report(replace(REPORT, original=bounce), NOW) is None
    folded = (
        b'Content-Type: multipart/report;\r\n report-type="delivery-status";\r\n'
        b' boundary="x"\r\n\r\n--x--\r\n'
    )
    assert build_report(replace(REPORT, original=folded), NOW) is None
    mdn = b"Content-Type: multipart/report; report-type=disposition-notification\r\n\r\n"
    assert build_report(replace(REPORT, original=mdn), NOW) is not None


@pytest.mark.parametrize(
    ("value", "reported"),
    [
        ("auto-generated", False),
        ("auto-replied (vacation)", False),
        ("No", True),
        ("no (a person wrote this)", True),
    ],
)
def test_auto_submitted(value: str, reported: bool) -> None:
    original = f"Auto-Submitted: {value}\r\n".encode() + ORIGINAL
    result = build_report(replace(REPORT, original=original), NOW)
    assert (result is not None) is reported


# --- size, 8-bit and UTF-8 ---------------------------------------------------------


def test_large_original_returns_headers_and_says_why() -> None:
    body = b"x" * 76 + b"\r\n"
    big = ORIGINAL + body * (ORIGINAL_SIZE_CAP // len(body) + 1)
    data = build(replace(REPORT, original=big))
    parts = raw_parts(data)
    assert parts[2][0].get_content_type() == "text/rfc822-headers"
    assert len(data) < 20_000
    assert "too large" in parts[0][1].decode()


def test_eight_bit_body_stays_message_rfc822() -> None:
    original = ORIGINAL.replace(b"Shall we meet at noon?", "Zażółć gęślą jaźń".encode())
    data = build(replace(REPORT, original=original))
    message = parse(data)
    assert message["Content-Transfer-Encoding"] == "8bit"
    header, body = raw_parts(data)[2]
    assert header.get_content_type() == "message/rfc822"
    assert header["Content-Transfer-Encoding"] == "8bit"
    assert body == original


def test_utf8_header_and_address_use_the_global_types() -> None:
    original = "From: Zoë <zoë@example.org>\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    recipient = replace(FAILED, address="jürgen@bücher.example", original=None)
    report = replace(REPORT, sender="zoë@example.org", original=original, recipients=(recipient,))
    data = build(report)
    message = email.message_from_bytes(data, policy=email.policy.SMTPUTF8)
    assert message["To"] == "zoë@example.org"
    parts = raw_parts(data)
    assert [p[0].get_content_type() for p in parts[1:]] == [
        "message/global-delivery-status",
        "message/global",
    ]
    assert parts[2][1] == original
    fields = status_blocks(parts[1][1])[1]
    assert fields["final-recipient"] == "utf-8; jürgen@bücher.example"
    assert "<jürgen@bücher.example>" in parts[0][1].decode("utf-8")


def test_header_that_is_not_utf8_returns_repaired_headers() -> None:
    original = b"From: a@example.org\r\nSubject: caf\xe9\r\n\r\nbody\r\n"
    header, body = raw_parts(build(replace(REPORT, original=original)))[2]
    assert header.get_content_type() == "message/global-headers"
    assert body.decode("utf-8") == "From: a@example.org\r\nSubject: caf\ufffd\r\n"


def test_bare_line_feeds_become_crlf() -> None:
    original = ORIGINAL.replace(b"\r\n", b"\n")
    assert raw_parts(build(replace(REPORT, original=original)))[2][1] == ORIGINAL


# --- hostile and long text ------------------------------------------------------------


def test_long_diagnostic_is_folded_and_unfolds_to_the_answer() -> None:
    words = [f"word{i}" for i in range(120)]
    answer = "550 5.7.1 " + " ".join(words)
    data = build(replace(REPORT, recipients=(replace(FAILED, diagnostic="smtp; " + answer),)))
    body = raw_parts(data)[1][1]
    lines = body.split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    continuation = [line for line in lines if line.startswith(b" ")]
    assert len(continuation) >= 10
    assert status_blocks(body)[1]["diagnostic-code"] == "smtp; " + answer


def test_remote_reply_cannot_inject_fields_or_parts() -> None:
    boundary_guess = "--=_report_"
    hostile = (
        "smtp; 550 no\r\nX-Injected: 1\r\n\r\nFinal-Recipient: rfc822; evil@x\n"
        f"{boundary_guess}\rContent-Type: text/html\x00\x1b[31m\u2028Action: delivered"
    )
    recipient = replace(FAILED, diagnostic=hostile, remote_mta="dns; mx\r\nX-Evil: 1")
    data = build(replace(REPORT, recipients=(recipient,)))
    message = parse(data)
    assert "X-Injected" not in message and "X-Evil" not in message
    assert len(message.get_payload()) == 3
    blocks = status_blocks(raw_parts(data)[1][1])
    assert len(blocks) == 2
    fields = blocks[1]
    assert fields["action"] == "failed"
    assert fields["final-recipient"] == "rfc822; bob@example.net"
    assert "x-injected" not in fields
    assert "\n" not in fields["diagnostic-code"] and "\r" not in fields["diagnostic-code"]
    assert fields["remote-mta"] == "dns; mx X-Evil: 1"


def test_original_holding_the_boundary_does_not_split_the_report() -> None:
    first = build()
    boundary = parse(first).get_boundary()
    assert boundary
    original = ORIGINAL + f"--{boundary}\r\n--{boundary}--\r\n".encode()
    data = build(replace(REPORT, original=original))
    assert raw_parts(data)[2][1] == original


_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_GAP = st.sampled_from([" ", "  ", "\r\n", "\n", "\t", "\r\n\t", " \r\n "])

_recipients = st.builds(
    ReportedRecipient,
    address=_ANY_TEXT,
    original=st.none() | _ANY_TEXT,
    action=st.sampled_from(["failed", "delayed", "delivered", "relayed"]),
    status=st.sampled_from(["5.1.1", "4.4.1", "2.0.0"]) | _ANY_TEXT,
    diagnostic=st.none() | _ANY_TEXT,
    remote_mta=st.none() | _ANY_TEXT,
    last_attempt=st.none() | st.just(NOW),
    retry_until=st.none() | st.just(NOW + timedelta(days=1)),
)


@settings(max_examples=150, deadline=None)
@given(
    recipients=st.lists(_recipients, min_size=1, max_size=4),
    sender=_ANY_TEXT.filter(bool),
    envid=st.none() | _ANY_TEXT,
    original=st.binary(max_size=2_000),
    ret=st.sampled_from(["FULL", "HDRS", None]),
)
def test_any_text_keeps_the_structure(
    recipients: list[ReportedRecipient],
    sender: str,
    envid: str | None,
    original: bytes,
    ret: str | None,
) -> None:
    report = Report("mx.example.org", sender, envid, ret, ARRIVAL, tuple(recipients), original)
    data = build_report(report, NOW)
    if data is None:  # the original happens to claim it is automatic: nothing to check
        assert b"auto-submitted" in original.lower() or b"report" in original.lower()
        return
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", data) is None, "every line ends in CRLF"
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = parse(data)
    top = {k.lower() for k in message}
    assert top <= {
        "from", "to", "subject", "date", "message-id", "in-reply-to", "references",
        "auto-submitted", "mime-version", "content-type", "content-transfer-encoding",
    }  # fmt: skip
    parts = raw_parts(data)
    assert len(parts) == 3
    blocks = status_blocks(parts[1][1])
    assert len(blocks) == 1 + len(recipients)
    allowed = {
        "original-recipient", "final-recipient", "action", "status", "remote-mta",
        "diagnostic-code", "last-attempt-date", "will-retry-until",
    }  # fmt: skip
    for block, recipient in zip(blocks[1:], recipients, strict=True):
        assert set(block) <= allowed
        assert block["action"] == recipient.action
        assert re.fullmatch(r"[245]\.\d+\.\d+", block["status"])
        assert ("original-recipient" in block) == bool(recipient.original)
    if ret == "FULL" and parts[2][0].get_content_type() in ("message/rfc822", "message/global"):
        assert parts[2][1] == crlf(original)


@settings(max_examples=100, deadline=None)
@given(words=st.lists(_WORD, min_size=1, max_size=60), gaps=st.lists(_GAP, min_size=60))
def test_line_breaks_in_an_answer_become_spaces(words: list[str], gaps: list[str]) -> None:
    answer = "".join(w + g for w, g in zip(words, gaps, strict=False)).rstrip()
    recipient = replace(FAILED, diagnostic="smtp; 550 " + answer)
    data = build(replace(REPORT, recipients=(recipient,)))
    fields = status_blocks(raw_parts(data)[1][1])[1]
    assert fields["diagnostic-code"] == "smtp; 550 " + " ".join(words)

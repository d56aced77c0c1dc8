"""Property tests for the SMTP server core: robustness, DATA round trip, split invariance."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.sasl import derive_scram_credentials
from poczta.smtp import (
    Accept,
    AuthPassword,
    AuthScram,
    CheckRecipient,
    CheckSender,
    Event,
    MessageReceived,
    Role,
    SmtpLimits,
    SmtpServer,
    StartTls,
    TlsInfo,
)

CREDS = derive_scram_credentials("pencil", iterations=16, salt=b"salt")


def drive(core: SmtpServer, events: list[Event], log: list[Event]) -> None:
    """Record events, answering every question the way a permissive session would."""
    pending = list(events)
    while pending:
        event = pending.pop(0)
        log.append(event)
        if isinstance(event, CheckSender | CheckRecipient | MessageReceived):
            pending[:0] = core.answer(Accept())
        elif isinstance(event, AuthPassword):
            pending[:0] = core.answer_auth_password(event.authcid)
        elif isinstance(event, AuthScram):
            pending[:0] = core.answer_auth_scram(CREDS, event.authcid)
        elif isinstance(event, StartTls):
            pending[:0] = core.tls_started(TlsInfo("TLSv1.3", "X"))


def run(chunks: list[bytes], role: Role = Role.SUBMISSION, **limits: int) -> list[Event]:
    core = SmtpServer(
        hostname="mx.example.test",
        role=role,
        limits=SmtpLimits(**limits),
        tls_available=True,
        plaintext_auth_allowed=True,
    )
    log: list[Event] = []
    drive(core, core.start(), log)
    for chunk in chunks:
        drive(core, core.receive(chunk), log)
    drive(core, core.eof(), log)
    return log


VERBS = [
    b"EHLO x",
    b"HELO x",
    b"MAIL FROM:<a@b.test>",
    b"RCPT TO:<c@d.test>",
    b"DATA",
    b"BDAT 4",
    b"BDAT 3 LAST",
    b"RSET",
    b"NOOP",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"AUTH PLAIN AGEAYg==",
    b"AUTH LOGIN",
    b"AUTH SCRAM-SHA-256",
    b".",
    b"*",
    b"",
    b"QUIT",
]
LINES = st.one_of(st.sampled_from(VERBS), st.binary(max_size=40))
ENDINGS = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
COMMAND_STREAM = st.lists(st.tuples(LINES, ENDINGS), max_size=30).map(
    lambda items: b"".join(line + end for line, end in items)
)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=10), st.sampled_from(list(Role)))
def test_random_bytes_never_raise(chunks: list[bytes], role: Role) -> None:
    run(chunks, role, max_command_line=32, max_data_line=16, max_message_size=64)


@settings(max_examples=300)
@given(COMMAND_STREAM, st.sampled_from(list(Role)))
def test_random_command_lines_never_raise(stream: bytes, role: Role) -> None:
    run([stream], role, max_errors=50, max_command_line=48, max_data_line=32)


BODY_LINES = st.lists(
    st.text(alphabet=st.sampled_from("ab. \t\u00e9"), max_size=12).map(lambda s: s.encode("utf-8")),
    max_size=12,
)


@given(BODY_LINES, st.lists(st.integers(min_value=0), max_size=6))
def test_dot_stuffed_body_round_trips(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    wire = b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n" + stuffed + b".\r\n"
    events = run(split(wire, cuts), Role.MX)
    messages = [e for e in events if isinstance(e, MessageReceived)]
    assert len(messages) == 1
    assert messages[0].data == body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


SESSION = (
    b"EHLO x\r\nMAIL FROM:<a@b.test> SIZE=10\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"
    b"x\n.\ny\r\n..z\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
    b"BDAT 5\r\n\r\n.\r\nBDAT 2 LAST\r\nab"
    b"AUTH PLAIN\r\nAGEAYg==\r\nNOOP\r\nTOOLONG-TOOLONG-TOOLONG-TOOLONG-TOOLONG\r\nQUIT\r\n"
)


@settings(max_examples=300)
@given(st.lists(st.integers(min_value=0), max_size=12), st.binary(max_size=30))
def test_split_points_do_not_matter(cuts: list[int], noise: bytes) -> None:
    wire = SESSION[:120] + noise + SESSION[120:]
    whole = run([wire], Role.SUBMISSION, max_command_line=32)
    assert run(split(wire, cuts), Role.SUBMISSION, max_command_line=32) == whole
    assert run([bytes([b]) for b in wire], Role.SUBMISSION, max_command_line=32) == whole

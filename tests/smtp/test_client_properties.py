"""Property tests for the SMTP client core: split invariance, robustness, dot-stuffing."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.smtp.body import DotReader
from poczta.smtp.client import SmtpClient
from poczta.smtp.client_body import bdat_chunks, data_pieces, normalized_slices, wire_size
from poczta.smtp.client_events import (
    ClientEvent,
    Close,
    DeliveryStatus,
    HostFailed,
    OutboundMessage,
    RecipientResult,
    SendBody,
    StartTls,
    TransactionResult,
    Write,
)
from poczta.smtp.client_replies import ReplyError, ReplyReader
from poczta.smtp.replies import Reply

MESSAGE = OutboundMessage.to(
    "a@client.test", ["b@example.test", "c@example.test", "d@example.test"], b"hi\r\n"
)
# What the server sends, in the turns a server can take: each only after the client's
# write it answers (greeting; EHLO reply; the pipelined group's replies; end of data).
SERVER = [
    b"220 mx.example.test ESMTP\r\n",
    b"250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n",
    b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n"
    b"451 4.7.1 later\r\n354 go\r\n",
    b"250 2.0.0 queued\r\n",
]


def drive(client: SmtpClient, events: list[ClientEvent], log: list[object]) -> None:
    """Record events as comparable values; take every body piece, accept every handshake."""
    for event in events:
        if isinstance(event, SendBody):
            log.append(("body", b"".join(event.chunks)))
        elif isinstance(event, StartTls):
            log.append(event)
            drive(client, client.tls_started(), log)
        else:
            log.append(event)


def run(chunks: list[bytes], message: OutboundMessage = MESSAGE) -> list[object]:
    client = SmtpClient(hostname="client.example.test", peer="mx.example.test")
    log: list[object] = []
    drive(client, client.send(message), log)
    for chunk in chunks:
        drive(client, client.receive(chunk), log)
    drive(client, client.eof(), log)
    return log


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_a_whole_dialogue_turn_by_turn() -> None:
    log = run(SERVER)
    results = [e for e in log if isinstance(e, TransactionResult)]
    assert len(results) == 1
    statuses = {r.address: r.outcome.status for r in results[0].results}
    assert statuses == {
        "b@example.test": DeliveryStatus.DELIVERED,
        "c@example.test": DeliveryStatus.PERMANENT,
        "d@example.test": DeliveryStatus.TEMPORARY,
    }
    refused = next(r for r in results[0].results if r.address == "c@example.test")
    assert refused.outcome.diagnostic_code == "smtp; 550 5.1.1 no such user"


@given(st.lists(st.lists(st.integers(min_value=0), max_size=6), min_size=4, max_size=4))
def test_any_split_of_the_server_replies_gives_the_same_events(cuts: list[list[int]]) -> None:
    pieces = [piece for turn, c in zip(SERVER, cuts, strict=True) for piece in split(turn, c)]
    assert run(pieces) == run(SERVER)


def test_a_reply_before_the_data_is_sent_is_a_protocol_error() -> None:
    log = run([b"".join(SERVER)])
    [failed] = [e for e in log if isinstance(e, HostFailed)]
    assert "before the message data was sent" in failed.outcome.text
    [result] = [e for e in log if isinstance(e, TransactionResult)]
    assert DeliveryStatus.DELIVERED not in {r.outcome.status for r in result.results}


def _check_ends_well(log: list[object], message: OutboundMessage) -> None:
    """One TransactionResult covering every recipient once, then Close, and nothing after."""
    results = [e for e in log if isinstance(e, TransactionResult)]
    assert len(results) == 1
    addresses = [r.address for r in results[0].results]
    assert sorted(addresses) == sorted(r.address for r in message.recipients)
    decided = [e.address for e in log if isinstance(e, RecipientResult)]
    assert sorted(decided) == sorted(addresses)
    assert isinstance(log[-1], Close)
    assert sum(isinstance(e, Close) for e in log) == 1
    for event in log:
        if isinstance(event, HostFailed):
            assert event.outcome.status is DeliveryStatus.TEMPORARY
            assert event.outcome.enhanced.startswith("4.")


@settings(max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=6))
def test_arbitrary_server_bytes_never_raise_and_end_in_an_outcome(
    data: bytes, cuts: list[int]
) -> None:
    _check_ends_well(run(split(data, cuts)), MESSAGE)


_LINES = st.sampled_from(
    [
        b"220 mx ESMTP\r\n",
        b"250 OK\r\n",
        b"250-PIPELINING\r\n",
        b"250-CHUNKING\r\n",
        b"250-STARTTLS\r\n",
        b"250-SIZE 10\r\n",
        b"354 go\r\n",
        b"421 bye\r\n",
        b"450 4.2.1 busy\r\n",
        b"550 5.1.1 no\r\n",
        b"220 2.0.0 go TLS\r\n",
        b"503 5.5.1 sequence\r\n",
        b"250 2.0.0 queued\n",
    ]
)


@settings(max_examples=300)
@given(st.lists(_LINES, max_size=20))
def test_plausible_but_wrong_dialogues_end_in_an_outcome(lines: list[bytes]) -> None:
    _check_ends_well(run(lines), MESSAGE)


def test_a_reply_cap_bounds_what_is_buffered() -> None:
    reader = ReplyReader()
    reader.feed(b"250-" + b"x" * 10_000_000)
    [error] = list(reader.replies())
    assert "longer than" in getattr(error, "reason", "")
    assert not reader.partial


_BODY = st.lists(
    st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"x" * 7, b"\xc3"]),
    max_size=40,
).map(b"".join)


def _normalized(body: bytes) -> bytes:
    out = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return out if not out or out.endswith(b"\r\n") else out + b"\r\n"


@given(_BODY, st.integers(min_value=1, max_value=9))
def test_dot_stuffing_round_trips_through_the_server_reader(body: bytes, size: int) -> None:
    wire = b"".join(data_pieces(body, size))
    reader = DotReader(max_size=1 << 20, max_line=1 << 20)
    assert reader.feed(wire) == b""  # the end marker is the last thing on the wire
    assert reader.result("reject", 1 << 20) == _normalized(body)
    assert len(_normalized(body)) == wire_size(body)


@given(_BODY, st.integers(min_value=1, max_value=9))
def test_slices_and_chunks_carry_the_normalised_body(body: bytes, size: int) -> None:
    assert b"".join(normalized_slices(body, size)) == _normalized(body)
    content = bytearray()
    chunks = list(bdat_chunks(body, size))
    assert [last for _, last in chunks] == [False] * (len(chunks) - 1) + [True]
    for chunk, _ in chunks:
        head, _, data = chunk.partition(b"\r\n")
        assert int(head.split()[1]) == len(data)
        content += data
    assert bytes(content) == _normalized(body)


def test_the_body_is_handed_out_in_pieces() -> None:
    body = b"line\r\n" * 50_000  # 300 kB
    pieces = list(data_pieces(body))
    assert len(pieces) > 4
    assert max(len(p) for p in pieces) <= 64 * 1024 + 1024
    assert pieces[-1].endswith(b"line\r\n.\r\n")  # the end of data goes with the last


def test_a_small_body_and_its_end_are_one_piece() -> None:
    assert list(data_pieces(b"Subject: hi\r\n\r\n.hello\r\n")) == [
        b"Subject: hi\r\n\r\n..hello\r\n.\r\n"
    ]
    assert list(data_pieces(b"")) == [b".\r\n"]


def test_writes_are_bytes_only_events_in_order() -> None:
    log = run(SERVER)
    writes = [e.data for e in log if isinstance(e, Write)]
    assert writes[0] == b"EHLO client.example.test\r\n"
    assert writes[1].count(b"\r\n") == 5  # MAIL, three RCPT, DATA in one write


# RFC 5321 4.2's reply line and RFC 3463's enhanced code as regular expressions: the
# reference the reader's hand-written checks must agree with, octet for octet.
_REPLY_LINE = re.compile(rb"([2-5][0-9]{2})([ -]?)(.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|$)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _reference(line: bytes) -> Reply | str | None:
    """The one-line reply `line` is, "more" for the first line of a longer one, or None
    when it is no reply line."""
    m = _REPLY_LINE.fullmatch(line)
    if m is None or (m.group(2) == b"" and m.group(3)):
        return None
    if m.group(2) == b"-":
        return "more"
    code, text = int(m.group(1)), _CONTROL.sub("?", m.group(3).decode("utf-8", "replace"))
    e = _ENHANCED.match(text)
    if e is None or e.group(1) != str(code)[0]:
        return Reply(code, None, text)
    prefix = e.group(0).rstrip(" ")
    return Reply(
        code, f"{e.group(1)}.{int(e.group(2))}.{int(e.group(3))}", text[len(prefix) :].lstrip(" ")
    )


_LINE_TEXT = st.text(alphabet="0123456789. -abc\x01\x7f\x85é\u2028", max_size=16)


@given(
    st.one_of(
        st.binary(max_size=12).filter(lambda b: b"\n" not in b),
        st.builds(
            lambda code, sep, text: code.encode() + sep + text.encode(),
            st.sampled_from(["250", "354", "421", "550", "199", "600", "25", "2x0"]),
            st.sampled_from([b" ", b"", b"-", b"x", b"\t"]),
            _LINE_TEXT,
        ),
    )
)
def test_a_reply_line_reads_as_the_grammar_says(line: bytes) -> None:
    reader = ReplyReader()
    reader.feed(line + b"\r\n")
    got = list(reader.replies())
    expected = _reference(line)
    if expected == "more":
        assert got == [] and reader.partial
    elif expected is None:
        assert len(got) == 1 and isinstance(got[0], ReplyError)
    else:
        assert got == [expected]

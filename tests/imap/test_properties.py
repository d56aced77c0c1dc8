"""Properties of the reader and parser: round trips, chunking, robustness."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poczta.imap import CommandError, Dialect, ImapLimits
from poczta.imap import commands as c
from poczta.imap.render import render
from tests.imap.harness import Client, joined, play
from tests.imap.strategies import commands

SMALL = ImapLimits(
    max_line=256,
    max_command=2048,
    max_literal=64,
    max_append_literal=200,
    max_discard=300,
    max_depth=8,
    max_search_keys=40,
    max_pipelined=4096,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(commands, st.booleans(), st.booleans())
def test_rendered_command_parses_back_equal(command: c.Command, utf8: bool, plus: bool) -> None:
    dialect = Dialect(utf8=utf8)
    wire = render(command, dialect, literal_plus=plus)
    events = play([wire], dialect=dialect)
    assert events[-1] == command, wire


SAMPLES = [
    b"a NOOP\r\n",
    b"b LOGIN {5}\r\nalice {6+}\r\nsecret\r\n",
    b'c APPEND INBOX (\\Seen) "01-Jan-2024 00:00:00 +0000" {12+}\r\nSubject: x\r\n {3}\r\nabc\r\n',
    b"d UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)]<0.10>) (CHANGEDSINCE 5 VANISHED)\r\n",
    b"e SEARCH RETURN (COUNT) CHARSET UTF-8 OR (SEEN FROM {3+}\r\nbob) NOT DELETED\r\n",
    b"f AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n",
    b"g IDLE\r\nDONE\r\n",
    b"h IDLE\r\nnope\r\n",
    b"i SEARCH SUBJECT {100}\r\n",
    b"j SEARCH SUBJECT {100+}\r\n" + b"y" * 100 + b"\r\n",
    b"k SEARCH " + b"x" * 300 + b" {3+}\r\nabc\r\n",
    b"l SEARCH " + b"NOT " * 20 + b"ALL\r\n",
    b"m STORE 1:4 +FLAGS.SILENT (\\Seen)\r\n",
    b"n SELECT &AOk-\r\n",
    b"o STARTTLS\r\n",
    b"\r\n",
    b"* garbage\r\n",
    b"p APPEND INBOX {300}\r\n",
    b"q APPEND INBOX ~{3+}\r\n\x00\x00\x00\r\n",
]
line = st.one_of(st.sampled_from(SAMPLES), st.binary(max_size=60))
streams = st.lists(line, max_size=12).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300)
@given(streams, st.lists(st.integers(min_value=0), max_size=16))
def test_chunking_does_not_change_the_events(data: bytes, cuts: list[int]) -> None:
    assert play(_split(data, cuts), limits=SMALL) == play([data], limits=SMALL)


@settings(max_examples=300)
@given(st.lists(st.one_of(streams, st.binary(max_size=400)), max_size=6), st.booleans())
def test_arbitrary_bytes_never_raise_and_the_reader_recovers(
    chunks: list[bytes], utf8: bool
) -> None:
    client = Client(SMALL, Dialect(utf8=utf8))
    for chunk in chunks:
        client.send(chunk)
    if client.reader.closed:
        assert any(isinstance(e, CommandError) and e.fatal for e in client.events)
        return
    # Whatever literal or line was open is at most max_discard octets long.
    events = joined(client.send(b"\r\n" + b" " * 400 + b"\r\nz NOOP\r\n"))
    assert events[-1] == c.Noop("z")


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_every_error_names_a_reason_and_encodes_on_one_line(data: bytes) -> None:
    for event in play([data + b"\r\n"], limits=SMALL):
        if isinstance(event, CommandError):
            assert event.reason
            wire = event.response().encode()
            assert wire.endswith(b"\r\n") and wire.count(b"\n") == 1

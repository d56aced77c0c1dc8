"""Property tests for the POP3 core: robustness, chunking invariance, dot-stuffing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.pop3 import MultiLine, Pop3Limits, Pop3Server, Reply
from poczta.pop3.wire import stuff, top, unstuff
from tests.pop3.harness import FakeSession

COMMANDS = [
    b"USER alice",
    b"PASS secret",
    b"PASS wrong",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"AUTH LOGIN",
    b"YWxpY2U=",
    b"c2VjcmV0",
    b"*",
    b"CAPA",
    b"STAT",
    b"LIST",
    b"LIST 2",
    b"UIDL",
    b"UIDL 9",
    b"RETR 1",
    b"TOP 2 1",
    b"DELE 1",
    b"DELE 3",
    b"RSET",
    b"NOOP",
    b"STLS",
    b"APOP x y",
    b"QUIT",
    b"",
]

line = st.one_of(
    st.sampled_from(COMMANDS),
    st.binary(max_size=80),
    st.text(max_size=40).map(lambda t: t.encode()),
)
ending = st.sampled_from([b"\r\n", b"\n", b"\r\n", b""])
stream = st.lists(st.tuples(line, ending), max_size=30).map(
    lambda parts: b"".join(a + b for a, b in parts)
)


def new_core(tls_active: bool = True) -> tuple[Pop3Server, FakeSession]:
    core = Pop3Server(
        hostname="mail.example.test",
        tls_available=True,
        tls_active=tls_active,
        limits=Pop3Limits(max_line=48, max_auth_line=96, max_errors=8, max_auth_failures=3),
    )
    session = FakeSession(core)
    session.drive(core.start())
    return core, session


def play(chunks: list[bytes], tls_active: bool = True, eof: bool = True) -> list[str]:
    core, session = new_core(tls_active)
    out: list[str] = []
    for chunk in chunks:
        out += session.drive(core.receive(chunk))
    if eof:
        out += session.drive(core.eof())
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@settings(max_examples=300)
@given(st.lists(st.one_of(stream, st.binary(max_size=300)), max_size=8), st.booleans())
def test_arbitrary_input_never_raises(chunks: list[bytes], tls_active: bool) -> None:
    out = play(chunks, tls_active)
    assert out[-1] == "E: Close"
    assert all(line.startswith(("S:", "E:")) for line in out)


@settings(max_examples=300)
@given(stream, st.lists(st.integers(min_value=0), max_size=12))
def test_chunk_splits_do_not_change_events(data: bytes, cuts: list[int]) -> None:
    # TLS already active: STLS is refused, so no input is dropped for a handshake.
    assert play(split(data, cuts)) == play([data])


crlf_line = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
message = st.lists(crlf_line, max_size=20).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


@given(message)
def test_stuffing_round_trips(data: bytes) -> None:
    body = stuff(data)
    assert body.endswith(b".\r\n")
    assert unstuff(body) == data
    lines = body.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    assert b"." not in lines[:-2]


@given(message, st.integers(min_value=0, max_value=30))
def test_top_is_a_prefix(data: bytes, count: int) -> None:
    assert data.startswith(top(data, count))


@given(message)
def test_retr_output_unstuffed_equals_the_message(data: bytes) -> None:
    core = Pop3Server(hostname="h", tls_available=False, tls_active=True)
    session = FakeSession(core, messages=[("m1", data)])
    session.drive(core.receive(b"USER alice\r\nPASS secret\r\n"))
    events = core.receive(b"RETR 1\r\n")
    events += core.message_data(data)
    retr = events[-1]
    assert isinstance(retr, MultiLine)
    assert retr.first == Reply(True, f"{len(data)} octets")
    assert unstuff(retr.body) == data

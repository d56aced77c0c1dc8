"""Framing: literals, limits, refusals, pauses and streamed APPEND data, as a session sees them."""

from __future__ import annotations

import pytest

from poczta.imap import (
    AppendData,
    AppendHead,
    AppendStart,
    CommandError,
    CommandReader,
    Dialect,
    IdleDone,
    ImapLimits,
    LiteralPending,
    ReaderUsageError,
    SaslResponse,
)
from poczta.imap import commands as c
from tests.imap.harness import Client, commands

SMALL = ImapLimits(
    max_line=300,
    max_command=1000,
    max_literal=100,
    max_append_literal=500,
    max_discard=2000,
    max_pipelined=600,
)


def test_synchronising_literal_waits_for_the_session() -> None:
    reader = CommandReader()
    assert reader.feed(b"a LOGIN {5}\r\n") == [LiteralPending("a", 5)]
    assert reader.waiting
    assert reader.feed(b"alice") == []  # nothing is read before the answer
    assert reader.accept_literal() == []
    assert reader.feed(b" secret\r\n") == [c.Login("a", "alice", "secret")]


def test_refused_literal_drops_the_command_and_reads_the_next() -> None:
    reader = CommandReader()
    assert reader.feed(b"a LOGIN {5}\r\n") == [LiteralPending("a", 5)]
    assert reader.refuse_literal() == []
    assert reader.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_literal_over_the_limit_is_refused_before_its_octets() -> None:
    reader = CommandReader(SMALL)
    events = reader.feed(b"a SEARCH SUBJECT {101}\r\n")
    assert events == [CommandError("a", "literal too large", "NO", "TOOBIG")]
    [error] = events
    assert isinstance(error, CommandError)
    assert error.response().encode() == b"a NO [TOOBIG] literal too large\r\n"
    assert not reader.waiting
    assert reader.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_syntax_error_before_a_literal_is_refused_before_the_literal() -> None:
    reader = CommandReader()
    assert reader.feed(b"a FROB {5}\r\n") == [CommandError("a", "unknown command")]
    assert reader.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_oversized_non_synchronising_literal_is_skipped_with_its_command() -> None:
    client = Client(SMALL)
    events = client.send(b"a SEARCH SUBJECT {150+}\r\n" + b"x" * 150 + b" BODY {5+}\r\nhello\r\n")
    assert events == [CommandError("a", "literal too large", "BAD", "TOOBIG")]
    assert client.send(b"b NOOP\r\n") == [c.Noop("b")]


def test_non_synchronising_literal_beyond_the_discard_cap_is_fatal() -> None:
    client = Client(SMALL)
    events = client.send(b"a SEARCH SUBJECT {2001+}\r\n" + b"x" * 100)
    assert events == [CommandError("a", "literal too large", "BAD", "TOOBIG", fatal=True)]
    assert client.reader.closed
    assert client.send(b"b NOOP\r\n") == []


def test_literal_minus_allows_only_small_non_synchronising_literals() -> None:
    minus = Dialect(literal_minus=True)
    big = b"x" * 4097
    events = commands(
        b"a LOGIN {4097+}\r\n" + big + b" pw\r\nb NOOP\r\n",
        dialect=minus,
        limits=ImapLimits(max_literal=8192),
    )
    assert events == [
        CommandError("a", "non-synchronising literal over 4096 octets", "BAD", "TOOBIG"),
        c.Noop("b"),
    ]
    small = commands(b"a LOGIN {4096+}\r\n" + big[:4096] + b" pw\r\n", dialect=minus)
    assert small == [c.Login("a", "x" * 4096, "pw")]


def test_overlong_line_is_bad_at_once_and_discarded_to_its_end() -> None:
    client = Client(SMALL)
    events = client.send(b"a1 SEARCH " + b"ALL " * 100)
    assert events == [CommandError("a1", "command line too long", code="TOOBIG")]
    assert client.reader.buffered == 0  # nothing of it is kept
    assert client.send(b"ALL ALL\r\nb NOOP\r\n") == [c.Noop("b")]


def test_overlong_line_ending_in_a_literal_skips_the_literal() -> None:
    events = commands(b"a1 LOGIN " + b"x" * 400 + b" {5+}\r\nhello\r\nb NOOP\r\n", limits=SMALL)
    assert events == [CommandError("a1", "command line too long", code="TOOBIG"), c.Noop("b")]


def test_command_over_the_total_limit_is_refused() -> None:
    line = b"a LOGIN {90+}\r\n" + b"u" * 90 + b" {90+}\r\n" + b"p" * 90
    events = commands(line + (b" " + b"x" * 250) * 4 + b"\r\nb NOOP\r\n", limits=SMALL)
    assert events[0] == CommandError("a", "command line too long", code="TOOBIG")
    assert events[-1] == c.Noop("b")
    limits = ImapLimits(max_line=256, max_command=300)
    events = commands(
        b"a LOGIN {200+}\r\n" + b"u" * 200 + b" {200+}\r\n" + b"p" * 200 + b"\r\n", limits=limits
    )
    assert events == [CommandError("a", "literal too large", "BAD", "TOOBIG")]


def test_append_streams_each_message_then_gives_the_command() -> None:
    reader = CommandReader()
    events = reader.feed(b'a APPEND Drafts (\\Draft) "05-Mar-2024 10:00:00 +0100" {10}\r\n')
    head = AppendHead("Drafts", ("\\Draft",), events[0].append.internal_date, 0)  # type: ignore[union-attr]
    assert events == [LiteralPending("a", 10, False, head)]
    assert reader.accept_literal() == [AppendStart("a", head, 10)]
    assert reader.feed(b"Subject") == [AppendData(b"Subject", False)]
    assert reader.feed(b": x ~{2+}\r\n\x00\x01\r\n") == [
        AppendData(b": x", True),
        AppendStart("a", AppendHead("Drafts", (), None, 1), 2, True),
        AppendData(b"\x00\x01", True),
        c.Append("a", "Drafts", (
            c.AppendMessage(("\\Draft",), head.internal_date, 10),
            c.AppendMessage((), None, 2, True),
        )),
    ]  # fmt: skip


def test_append_over_the_message_limit_is_no_toobig() -> None:
    reader = CommandReader(SMALL)
    assert reader.feed(b"a APPEND INBOX {501}\r\n") == [
        CommandError("a", "message too large", "NO", "TOOBIG")
    ]
    assert reader.feed(b"a APPEND INBOX {500+}\r\n")[0] == AppendStart(
        "a", AppendHead("INBOX", (), None, 0), 500
    )


def test_session_can_refuse_an_append_for_its_own_reasons() -> None:
    reader = CommandReader()
    pending = reader.feed(b"a APPEND Nowhere {3}\r\n")
    assert pending == [LiteralPending("a", 3, False, AppendHead("Nowhere", (), None, 0))]
    assert reader.refuse_literal() == []  # the session answered NO [TRYCREATE]
    assert reader.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_malformed_append_after_its_message_is_bad() -> None:
    events = commands(b"a APPEND INBOX {2+}\r\nhi junk\r\n")
    assert events[-1] == CommandError("a", "invalid literal announcement")
    assert AppendData(b"hi", True) in events


def test_authenticate_pauses_for_sasl_responses() -> None:
    reader = CommandReader()
    events = reader.feed(b"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\nb NOOP\r\n")
    assert events == [c.Authenticate("a", "PLAIN")]
    assert reader.waiting
    assert reader.expect_sasl_response() == [SaslResponse(b"AGFsaWNlAHNlY3JldA==")]
    assert reader.resume() == [c.Noop("b")]


def test_sasl_response_may_arrive_later_and_is_never_parsed() -> None:
    reader = CommandReader()
    reader.feed(b"a AUTHENTICATE SCRAM-SHA-256\r\n")
    assert reader.expect_sasl_response() == []
    assert reader.feed(b"* (not a command)\r\n") == [SaslResponse(b"* (not a command)")]
    with pytest.raises(ReaderUsageError):
        reader.accept_literal()


def test_overlong_sasl_response_is_bad_for_the_authenticate_tag() -> None:
    reader = CommandReader(SMALL)
    reader.feed(b"a AUTHENTICATE PLAIN\r\n")
    reader.expect_sasl_response()
    assert reader.feed(b"A" * 400) == [CommandError("a", "command line too long", code="TOOBIG")]
    assert reader.feed(b"AAAA\r\nb NOOP\r\n") == [c.Noop("b")]


def test_idle_ends_with_done_and_commands_follow() -> None:
    reader = CommandReader()
    assert reader.feed(b"a IDLE\r\n") == [c.Idle("a")]
    assert reader.expect_done() == []
    assert reader.feed(b"done\r\nb NOOP\r\n") == [IdleDone(), c.Noop("b")]


def test_idle_ended_by_anything_else_is_bad() -> None:
    reader = CommandReader()
    reader.feed(b"a IDLE\r\n")
    assert reader.expect_done() == []
    assert reader.feed(b"b NOOP\r\n") == [CommandError("a", "expected DONE")]
    assert reader.feed(b"c NOOP\r\n") == [c.Noop("c")]


def test_starttls_drops_what_was_pipelined_before_the_handshake() -> None:
    reader = CommandReader()
    assert reader.feed(b"a STARTTLS\r\nb LOGIN injected x\r\n") == [c.StartTls("a")]
    reader.drop_buffered()
    assert reader.resume() == []
    assert reader.feed(b"c NOOP\r\n") == [c.Noop("c")]


def test_compress_hands_over_the_octets_that_follow_it() -> None:
    reader = CommandReader()
    assert reader.feed(b"a COMPRESS DEFLATE\r\n\x78\x9c") == [c.Compress("a", "DEFLATE")]
    assert reader.take_buffered() == b"\x78\x9c"
    assert reader.resume() == []


def test_input_while_paused_is_bounded() -> None:
    reader = CommandReader(SMALL)
    reader.feed(b"a IDLE\r\n")
    events = reader.feed(b"x" * 601)
    assert events == [CommandError(None, "too much input while waiting", fatal=True)]
    assert reader.closed


def test_empty_lines_and_bare_lf_are_tolerated() -> None:
    assert commands(b"\r\n\r\na NOOP\nb LOGIN {1+}\nx y\n") == [
        c.Noop("a"),
        c.Login("b", "x", "y"),
    ]


def test_dialect_change_applies_to_the_next_command() -> None:
    reader = CommandReader()
    assert reader.feed(b"a SELECT &AOk-\r\n") == [c.Select("a", "é")]
    reader.dialect = Dialect(utf8=True)
    assert reader.feed(b"b SELECT &AOk-\r\n") == [c.Select("b", "&AOk-")]

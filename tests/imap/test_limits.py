"""Hostile input costs bounded memory and CPU: every limit is crossed once here.

None of these tests measures time; each checks that the hostile shape is refused
or kept compact (a range stays a range, a literal is refused before it is read).
"""

from __future__ import annotations

from poczta.imap import CommandError, CommandReader, ImapLimits, LiteralPending
from poczta.imap import commands as c
from poczta.imap.fetch import FetchItem
from poczta.imap.sequence import SequenceSet
from tests.imap.harness import commands, parse_one

TEN_MB = 10 * 1024 * 1024


def test_widest_sequence_set_stays_one_range() -> None:
    event = parse_one(b"a UID FETCH 1:4294967295 (UID)")
    assert event == c.Fetch("a", True, SequenceSet(((1, 4294967295),)), (FetchItem("UID"),))
    assert isinstance(event, c.Fetch)
    assert event.sequence.resolve(4294967295) == ((1, 4294967295),)


def test_sequence_set_text_over_the_limit_is_refused() -> None:
    limits = ImapLimits(max_sequence_set=1000)
    text = b",".join(b"%d" % n for n in range(1, 400))
    event = parse_one(b"a FETCH " + text + b" FLAGS", limits=limits)
    assert event == CommandError("a", "sequence set too long", code="LIMIT")


def test_ten_thousand_search_keys_are_refused() -> None:
    event = parse_one(b"a SEARCH" + b" SEEN" * 10000)
    assert event == CommandError("a", "too many search keys", code="LIMIT")
    assert isinstance(parse_one(b"a SEARCH" + b" SEEN" * 1000), c.Search)


def test_nesting_ten_thousand_deep_is_refused_without_recursion_error() -> None:
    deep = CommandError("a", "lists nested too deeply", code="LIMIT")
    assert parse_one(b"a SEARCH " + b"(" * 10000 + b"ALL" + b")" * 10000) == deep
    assert parse_one(b"a SEARCH " + b"NOT " * 10000 + b"ALL") == deep
    assert parse_one(b"a SEARCH " + b"OR ALL " * 9000 + b"ALL") == deep
    assert isinstance(parse_one(b"a SEARCH " + b"NOT " * 60 + b"ALL"), c.Search)


def test_ten_megabyte_search_string_is_refused_before_it_is_read() -> None:
    reader = CommandReader()
    events = reader.feed(b"a SEARCH TEXT {%d}\r\n" % TEN_MB)
    assert events == [CommandError("a", "literal too large", "NO", "TOOBIG")]
    assert not any(isinstance(event, LiteralPending) for event in events)
    assert reader.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_ten_megabyte_non_synchronising_string_ends_the_connection() -> None:
    reader = CommandReader()
    events = reader.feed(b"a SEARCH TEXT {%d+}\r\n" % TEN_MB)
    assert events == [CommandError("a", "literal too large", "BAD", "TOOBIG", fatal=True)]
    assert reader.feed(b"x" * 65536) == []
    assert reader.buffered == 0


def test_ten_megabyte_quoted_string_is_an_overlong_line_never_buffered_whole() -> None:
    reader = CommandReader()
    chunk = b"x" * 65536
    events = reader.feed(b'a SEARCH TEXT "')
    peak = 0
    for _ in range(TEN_MB // len(chunk)):
        events += reader.feed(chunk)
        peak = max(peak, reader.buffered)
    events += reader.feed(b'"\r\nb NOOP\r\n')
    assert events == [CommandError("a", "command line too long", code="TOOBIG"), c.Noop("b")]
    assert peak <= reader.limits.max_line + len(chunk)


def test_too_many_literals_in_one_command() -> None:
    limits = ImapLimits(max_literals=3)
    body = b"a APPEND INBOX" + b" {1+}\r\nx" * 4 + b"\r\n"
    events = commands(body, limits=limits)
    assert CommandError("a", "too many literals", code="LIMIT") in events


def test_too_many_list_items() -> None:
    limits = ImapLimits(max_items=5)
    event = parse_one(b"a STORE 1 FLAGS (" + b" ".join([b"k"] * 6) + b")", limits=limits)
    assert event == CommandError("a", "too many items in a list", code="LIMIT")


def test_too_many_part_levels() -> None:
    event = parse_one(b"a FETCH 1 BODY[" + b"1." * 100 + b"1]")
    assert event == CommandError("a", "part number nested too deeply", code="LIMIT")


def test_numbers_beyond_their_width() -> None:
    assert parse_one(b"a FETCH 1 BODY[]<99999999999999999999.1>") == CommandError(
        "a", "a partial origin is too large"
    )
    assert parse_one(b"a SEARCH LARGER 9223372036854775808") == CommandError(
        "a", "a size is too large"
    )
    assert isinstance(parse_one(b"a SEARCH LARGER 9223372036854775807"), c.Search)
    assert parse_one(b"a SEARCH OLDER 4294967296") == CommandError("a", "an interval is too large")

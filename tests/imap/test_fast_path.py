"""The fast path for simple command lines gives what the general parser gives, limits included."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap import CommandError, CommandReader, Dialect, ImapLimits
from poczta.imap import commands as c
from poczta.imap.fast_path import append_head, parse_simple
from poczta.imap.fetch import BodySection, FetchItem
from poczta.imap.lexer import AppendHead, Incomplete, ParseError
from poczta.imap.parser import parse_command
from poczta.imap.search import AndKey, FlagKey
from poczta.imap.sequence import STAR, SequenceSet
from tests.imap.harness import play

TIGHT = ImapLimits(max_line=256, max_items=2, max_depth=2, max_search_keys=3, max_sequence_set=8)


def general(line: bytes, dialect: Dialect, limits: ImapLimits) -> object:
    """What the general parser makes of one line: the command, or the error's parts."""
    try:
        return parse_command([line], [], dialect, limits)
    except ParseError as error:
        return ("error", error.tag, error.reason, error.status, error.code)


def _cased(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from([word, word.lower(), word.capitalize()])


def _mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """Good values three times in four, so that many lines parse."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good),
                     st.sampled_from(bad))  # fmt: skip


_tags = _mostly(["a", "A1", "x.y", "t]"], ["+t", "t*", "", "\x00", "t\xe9"])
_names = st.sampled_from(
    ["FETCH", "STORE", "SEARCH", "NOOP", "IDLE", "CHECK", "EXPUNGE", "COPY", "FETCH2"]
).flatmap(_cased)
_numbers = _mostly(["1", "17", "4294967295"], ["0", "007", "4294967296", "99999999999"])
_set_items = st.one_of(
    _numbers,
    st.just("*"),
    st.tuples(st.one_of(_numbers, st.just("*")), st.one_of(_numbers, st.just("*"))).map(":".join),
)
_sets = st.one_of(
    st.lists(_set_items, min_size=1, max_size=3).map(",".join),
    st.lists(_set_items, min_size=1, max_size=3).map(",".join),
    st.lists(_set_items, min_size=1, max_size=3).map(",".join),
    st.sampled_from(["$", "$,1", "1:", ",1", "1,,2", "*:*", ""]),
)
_attributes = st.sampled_from(
    [
        "BODY.PEEK[]", "body.peek[]", "FLAGS", "(FLAGS)", "(FLAGS UID)", "(UID FLAGS RFC822.SIZE)",
        "ALL", "fast", "(ALL)", "BODY[TEXT]<0.100>", "BODY[1.2.MIME]", "BINARY.PEEK[1]",
        "BINARY.SIZE[2]", "(BODY.PEEK[HEADER.FIELDS (From To)])", "(BODY[HEADER.FIELDS ()])",
        "(FLAGS  UID)", "()", "(FLAGS", "NOPE", "BODY[1.2.3.4]", "(BODY[]<0.0>)", "RFC822\xff",
    ]
)  # fmt: skip
_modifiers = st.sampled_from(
    ["", " (CHANGEDSINCE 5)", " (changedsince 0)", " (CHANGEDSINCE 99999999999999999999)",
     " (CHANGEDSINCE 9223372036854775808)", " (CHANGEDSINCE 5 VANISHED)", " (CHANGEDSINCE)",
     "  (CHANGEDSINCE 5)", " "]
)  # fmt: skip
_flags = st.sampled_from(
    ["\\Seen", "\\seen", "\\Flagged", "\\Recent", "$Junk", "\\Custom", "x\x00", "k\xe9", "\\*"]
)
_flag_lists = st.one_of(
    st.lists(_flags, max_size=3).map(lambda flags: "(" + " ".join(flags) + ")"),
    st.sampled_from(["\\Seen", "( \\Seen)", "(\\Seen )", "(\\Seen", ""]),
)
_store_items = st.tuples(
    st.sampled_from(["", " (UNCHANGEDSINCE 7)", " (unchangedsince 9223372036854775808)"]),
    st.sampled_from(["+", "-", "", "*"]),
    st.sampled_from(["FLAGS", "flags.silent", "FLAGS.SILENT", "FLAGSX", "FLAG"]),
).map(lambda parts: f"{parts[0].strip()} {parts[1]}{parts[2]}".strip())
_programs = st.sampled_from(
    ["ALL", "UNSEEN FLAGGED", "unseen", "SINCE 1-Feb-2024 BEFORE 1-Mar-2024", "UID 1:*",
     "1:5 NOT DELETED", "OR SEEN (FLAGGED DRAFT)", "NOT NOT NOT SEEN", "SUBJECT hello",
     "RETURN (COUNT) ALL", "CHARSET UTF-8 ALL", "SUBJECT \"x\"", "ALL  SEEN", "ALL ", "",
     "LARGER 99999999999999999999", "SINCE 30-Feb-2024", "KEYWORD $x", "(SEEN", "SUBJECT h\xe9"]
)  # fmt: skip


@st.composite
def simple_lines(draw: st.DrawFn) -> bytes:
    """Command lines shaped like the ones the fast path takes, many of them subtly wrong."""
    name = draw(_names)
    upper = name.upper()
    parts = [draw(_tags)]
    if draw(st.booleans()):
        parts.append(draw(_cased("UID")))
    parts.append(name)
    if upper == "FETCH":
        parts += [draw(_sets), draw(_attributes) + draw(_modifiers)]
    elif upper == "STORE":
        parts += [draw(_sets), draw(_store_items), draw(_flag_lists)]
    elif upper == "SEARCH":
        parts.append(draw(_programs))
    elif draw(st.booleans()):
        parts.append(draw(st.sampled_from(["", "x", "1"])))
    separator = draw(st.sampled_from([" "] * 9 + ["  "]))
    return separator.join(parts).encode("latin-1")


@settings(max_examples=1500)
@given(simple_lines(), st.booleans(), st.sampled_from([ImapLimits(), TIGHT]))
def test_fast_path_parses_like_the_general_parser(
    line: bytes, utf8: bool, limits: ImapLimits
) -> None:
    dialect = Dialect(utf8=utf8)
    fast = parse_simple(line, limits)
    if fast is not None:
        assert fast == general(line, dialect, limits), line


_mailboxes = st.sampled_from(
    ["INBOX", "inbox", "Sent", "&Jjo-", "a]b", "x+y", '"q"', "~x", "a\xe9"]
)
_dates = st.sampled_from(
    ["", ' "01-Jan-2024 00:00:00 +0000"', ' "1-Jan-2024 00:00:00 +0000"',
     ' "31-Feb-2024 00:00:00 +0000"', ' " 1-jan-2024 23:59:59 -1200"', ' "01-Jan-2024"',
     " 01-Jan-2024"]
)  # fmt: skip
_literals = st.sampled_from(
    ["{5}", "{5+}", "~{5}", "~{5+}", "{}", "{5+} ", "{99999999999999999999}"]
)


@st.composite
def append_lines(draw: st.DrawFn) -> bytes:
    """First lines of APPEND commands, up to their message literal, many of them wrong."""
    line = f"{draw(_tags)} {draw(_cased('APPEND'))} {draw(_mailboxes)}"
    if draw(st.booleans()):
        line += " " + draw(_flag_lists)
    line += draw(_dates) + draw(st.sampled_from([" ", " ", "  "])) + draw(_literals)
    return line.encode("latin-1")


@settings(max_examples=600)
@given(append_lines(), st.booleans(), st.sampled_from([ImapLimits(), TIGHT]))
def test_fast_append_head_is_the_general_parsers(
    line: bytes, utf8: bool, limits: ImapLimits
) -> None:
    head = append_head(line, limits)
    if head is not None:
        with pytest.raises(Incomplete) as incomplete:
            parse_command([line], [], Dialect(utf8=utf8), limits)
        assert incomplete.value.head == head, line


def test_common_append_heads_take_the_fast_path() -> None:
    line = b'a APPEND inbox (\\seen) "01-Jan-2024 00:00:00 +0000" {12+}'
    moment = datetime(2024, 1, 1, tzinfo=UTC)
    assert append_head(line, ImapLimits()) == AppendHead("INBOX", ("\\Seen",), moment, 0)
    assert append_head(b"b APPEND Sent ~{3}", ImapLimits()) == AppendHead("Sent", (), None, 0)


_appends = st.sampled_from(
    [
        b"p APPEND INBOX {3+}\r\nabc",
        b"q append Sent (\\Seen) {2}\r\nhi",
        b"r APPEND INBOX ~{1}\r\n\x00",
        b'r APPEND INBOX "01-Jan-2024 00:00:00 +0000" {1+}\r\nx',
        b"s APPEND INBOX {1+}\r\nx {1+}\r\ny",
        b"t APPEND INBOX {1+}\r\nx ",
        b"u APPEND INBOX {1+}\r\nxy",
        b"v APPEND &Jjo- {1+}\r\nx",
    ]
)


OVERLONG = b"o UID FETCH " + b"1," * 200 + b"1 FLAGS"


@settings(max_examples=300)
@given(
    st.lists(st.one_of(simple_lines(), _appends, st.just(OVERLONG)), min_size=1, max_size=8),
    st.sampled_from([ImapLimits(), TIGHT]),
)
def test_reader_events_are_the_same_without_the_fast_paths(
    lines: list[bytes], limits: ImapLimits
) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    fast = play([data], limits=limits)
    with (
        mock.patch("poczta.imap.reader.parse_simple", return_value=None),
        mock.patch.object(CommandReader, "_one_message_append", return_value=None),
    ):
        assert play([data], limits=limits) == fast


ONE = SequenceSet(((5, 5),))
ALL = SequenceSet(((1, STAR),))
SAVED = SequenceSet(saved=True)
PEEK = (BodySection(peek=True),)
FLAGS = (FetchItem("FLAGS"),)
UNSEEN_FLAGGED = AndKey((FlagKey("UNSEEN"), FlagKey("FLAGGED")))
SEEN_X = ("\\Seen", "x")
REMOVE = c.StoreMode.REMOVE


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"a1 UID FETCH 5 BODY.PEEK[]", c.Fetch("a1", True, ONE, PEEK)),
        (b"b uid fetch 1:* (flags) (changedsince 9)", c.Fetch("b", True, ALL, FLAGS, 9)),
        (b"c STORE $ -flags.silent (\\seen x)", c.Store("c", False, SAVED, REMOVE, SEEN_X, True)),
        (b"d UID SEARCH unseen FLAGGED", c.Search("d", True, UNSEEN_FLAGGED)),
        (b"e noop", c.Noop("e")),
        (b"f IDLE", c.Idle("f")),
    ],
)  # fmt: skip
def test_common_lines_take_the_fast_path(line: bytes, command: c.Command) -> None:
    assert parse_simple(line, ImapLimits()) == command
    assert general(line, Dialect(), ImapLimits()) == command


@pytest.mark.parametrize(
    "line",
    [
        b"a  UID FETCH 1 FLAGS",  # extra space
        b"a UID FETCH 1  FLAGS",
        b"a UID FETCH 1 FLAGS ",
        b"a NOOP ",
        b"a UID NOOP",
        b"a\x00 NOOP",
        b"a UID FETCH 01 FLAGS",
        b"a UID FETCH 1 FL\xc4GS",
        b"a STORE 1 +FLAGS (\\Recent)",
        b'a SEARCH SUBJECT "x"',
        b"a SEARCH CHARSET UTF-8 ALL",
        b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)",
    ],
)
def test_unusual_or_malformed_lines_are_left_to_the_general_parser(line: bytes) -> None:
    assert parse_simple(line, ImapLimits()) is None


def test_limits_hold_on_the_fast_path_after_the_same_text_was_kept() -> None:
    assert parse_simple(b"a STORE 1 +FLAGS (\\Seen \\Flagged x)", ImapLimits()) is not None
    events = play([b"b STORE 1 +FLAGS (\\Seen \\Flagged x)\r\n"], limits=TIGHT)
    assert events == [CommandError("b", "too many items in a list", code="LIMIT")]
    events = play([b"c UID FETCH 1:123456789 FLAGS\r\n"], limits=TIGHT)
    assert events == [CommandError("c", "sequence set too long", code="LIMIT")]
    events = play([b"d SEARCH SEEN SEEN SEEN SEEN\r\n"], limits=TIGHT)
    assert events == [CommandError("d", "too many search keys", code="LIMIT")]


def test_an_overlong_simple_line_is_refused_and_the_next_one_read() -> None:
    events = play([OVERLONG + b"\r\nb UID FETCH 2 FLAGS\r\n"], limits=TIGHT)
    assert events == [
        CommandError("o", "command line too long", code="TOOBIG"),
        c.Fetch("b", True, SequenceSet(((2, 2),)), (FetchItem("FLAGS"),)),
    ]

"""Unit tests for POP3 wire helpers: stuffing, TOP trimming, argument syntax."""

from __future__ import annotations

import pytest

from poczta.pop3.wire import parse_number, plural, shown, split_command, stuff, top, unstuff


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.b\r\n..\r\n", b"a\r\n..b\r\n...\r\n.\r\n"),
        (b"no end", b"no end\r\n.\r\n"),
        (b"bare\n.lf\n", b"bare\r\n..lf\r\n.\r\n"),
        (b"mixed\r\nends\n", b"mixed\r\nends\r\n.\r\n"),
    ],
)
def test_stuff(data: bytes, body: bytes) -> None:
    assert stuff(data) == body


def test_unstuff_needs_terminator() -> None:
    assert unstuff(b"..x\r\n.\r\n") == b".x\r\n"
    with pytest.raises(ValueError):
        unstuff(b"x\r\n")


MESSAGE = b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\nthree\r\n"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"A: 1\r\nB: 2\r\n\r\n"),
        (2, b"A: 1\r\nB: 2\r\n\r\none\r\ntwo\r\n"),
        (3, MESSAGE),
        (10, MESSAGE),
    ],
)
def test_top(lines: int, expected: bytes) -> None:
    assert top(MESSAGE, lines) == expected


def test_top_with_bare_lf_and_without_body() -> None:
    assert top(b"A: 1\n\nx\ny\n", 1) == b"A: 1\n\nx\n"
    assert top(b"A: 1\r\nB: 2\r\n", 0) == b"A: 1\r\nB: 2\r\n"


def test_argument_helpers() -> None:
    assert parse_number("007") == 7
    assert parse_number("١") is None  # non-ASCII digit
    assert parse_number("") is None
    assert split_command("list 1") == ("LIST", "1")
    assert shown("ok") == "ok" and shown("a\x1bb") == "" and shown("ą") == ""
    assert plural(1, "message") == "1 message" and plural(0, "message") == "0 messages"

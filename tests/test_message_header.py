"""The header split, RFC 2047 decoding and strict address lists, on good and hostile input.

The hostile shapes are the ones a sender controls: many short lines, one huge folded
field, thousands of encoded-words or addresses, unbalanced quotes, comments and angle
brackets. Each must be handled in work linear in its size. The tests bound the CPU
time of a ~500 KB input at a few seconds where the linear code needs a few tens of
milliseconds and a quadratic one minutes: a bound on the work, not a benchmark.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.dns import ZoneResolver
from poczta.mailauth.dkim import split_message, verify_dkim
from poczta.mailauth.dmarc import FromHeaderError, author_domain, from_header_values
from poczta.message import decode_words, parse_message
from poczta.message.addresses import parse_addresses, strict_addresses
from poczta.message.header import HeaderLimitExceeded, split_header

CPU_BUDGET = 5.0  # seconds for ~500 KB; linear code needs well under one


def test_fields_offsets_and_body() -> None:
    data = b"A: 1\r\nSubject: two\r\n\tlines\nFrom junk line\n\tlost\r\nB : 3\r\n\r\nbody\r\n"
    header = split_header(data)
    assert [(f.name, f.value) for f in header] == [
        (b"A", b" 1\r\n"),
        (b"Subject", b" two\r\n\tlines\r\n"),
        (b"B ", b" 3\r\n"),
    ]
    assert [data[f.start : f.end] for f in header][1] == b"Subject: two\r\n\tlines\n"
    assert header.first("b") is not None and header.named("subject")[0].text() == "two\tlines"
    assert header.body(data) == b"body\r\n" and header.size == data.index(b"body")


def test_no_empty_line_means_all_header() -> None:
    header = split_header(b"Subject: only")
    assert not header.has_body and header.body(b"Subject: only") == b""
    assert header.fields[0].value == b" only\r\n" and header.fields[0].end == 13
    assert split_header(b"\r\nbody").size == 2 and split_header(b"\nbody").size == 1


def test_limits() -> None:
    data = b"X: " + b"a" * 100 + b"\r\n\r\nbody"
    assert len(split_header(data, max_size=103)) == 1
    with pytest.raises(HeaderLimitExceeded) as size:
        split_header(data, max_size=102)
    assert size.value.what == "size"
    with pytest.raises(HeaderLimitExceeded):
        split_header(b"X: " + b"a" * 5000, max_size=1000)  # no empty line at all
    many = b"A: 1\r\n" * 11 + b"\r\n"
    assert len(split_header(many, max_fields=11)) == 11
    with pytest.raises(HeaderLimitExceeded) as fields:
        split_header(many, max_fields=10)
    assert fields.value.what == "fields"


def test_without_and_prepended_keep_every_other_byte() -> None:
    data = b"A: 1\r\njunk\r\nB: 2\r\n folded\r\nC: 3\r\n\r\nB: body\r\n"
    header = split_header(data)
    stripped, section = header.without(data, lambda f: f.key == "b")
    assert stripped == b"A: 1\r\njunk\r\nC: 3\r\n\r\nB: body\r\n"
    assert section == split_header(stripped)
    grown, section = section.prepended(stripped, b"Z: ours\r\n\tfolded\r\n")
    assert grown == b"Z: ours\r\n\tfolded\r\n" + stripped and section == split_header(grown)


line_end = st.sampled_from([b"\r\n", b"\n"])
field_name = st.text("abcdefghijklmnopqrstuvwxyz-XYZ0123456789", min_size=1, max_size=12)
value_line = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(
    st.lists(
        st.tuples(field_name, value_line, st.lists(value_line, max_size=3), line_end),
        max_size=20,
    ),
    st.binary(max_size=50),
)
def test_any_header_splits_back_into_its_fields(
    fields: list[tuple[str, bytes, list[bytes], bytes]], body: bytes
) -> None:
    data = b"".join(
        name.encode() + b":" + first + end + b"".join(b" " + more + end for more in folds)
        for name, first, folds, end in fields
    )
    data += b"\r\n" + body
    header = split_header(data)
    assert [f.name.decode() for f in header] == [name for name, *_ in fields]
    for f, (_, first, folds, _) in zip(header, fields, strict=True):
        assert f.value == b"\r\n".join([first, *(b" " + more for more in folds)]) + b"\r\n"
    assert header.body(data) == body
    stripped, section = header.without(data, lambda f: len(f.name) % 2 == 0)
    assert section == split_header(stripped)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    header = split_header(data)
    assert all(0 <= f.start < f.end <= len(data) for f in header)
    try:
        bounded = split_header(data, max_size=100, max_fields=5)
    except HeaderLimitExceeded as exc:
        assert exc.what in ("size", "fields")
    else:
        assert bounded == header  # within the limits, the limits change nothing
    parse_message(data, header)


def test_decode_words() -> None:
    assert decode_words("=?utf-8?q?Zo=C3=AB?=") == "Zoë"
    assert decode_words("=?utf-8?b?WmHFvMOzxYLEhw==?= =?utf-8?q?_g=C4=99=C5=9Bl=C4=85?=") == (
        "Zażółć gęślą"
    )
    assert decode_words("=?utf-8?q?=C5?= =?utf-8?q?=BC?=") == "ż"  # a character split in two
    assert decode_words("a =?iso-8859-2?q?=B3?= b") == "a ł b"
    assert decode_words("=?x-unknown?q?ok?=") == "ok"
    assert decode_words("=?utf-8?b?!!!?= tail") == "=?utf-8?b?!!!?= tail"
    assert decode_words("=?utf-8*pl?q?tak?=") == "tak"


@given(st.text(max_size=300))
def test_decode_words_never_raises(text: str) -> None:
    decode_words(text)


def test_strict_addresses_refuse_what_a_lenient_reader_could_misread() -> None:
    assert strict_addresses('"Smith, Al" <al@example.com>, b@c.d') == ("al@example.com", "b@c.d")
    assert strict_addresses("team: a@b.c, d@e.f;") == ("a@b.c", "d@e.f")
    assert strict_addresses("a@b.c (comment)") == ("a@b.c",)
    for forged in ("<a@b.c> <d@e.f>", "a@b.c d@e.f", "Al <a@b.c> d@e.f", "a@b@c", "abc"):
        assert strict_addresses(forged) is None, forged


def test_dmarc_sees_one_author_or_none() -> None:
    assert author_domain(["Alice <alice@Example.ORG>"]) == "example.org"
    for bad in (["<a@b.test> <c@d.test>"], ["a@b.test, c@d.test"], ["a@b.test", "c@d.test"]):
        with pytest.raises(FromHeaderError):
            author_domain(bad)
    assert from_header_values(b"From: a@b.test\r\nFrom: c@d.test\r\n\r\n") == [
        "a@b.test",
        "c@d.test",
    ]


def _hostile(shape: str, size: int) -> bytes:
    """About `size` bytes of a hostile header section, then an empty line and a body."""
    unit, start = {
        "short lines": (b"X:\r\n", b""),
        "one folded field": (b" x\r\n", b"X-Bomb: y\r\n"),
        "bare CRs": (b"x\r", b"X-CR: "),
        "encoded words": (b"=?utf-8?q?=C5=BC?= ", b"Subject: "),
        "bad encoded words": (b"=?utf-8?b?*?= =?", b"Subject: "),
        "addresses": (b"u@h.test, ", b"To: "),
        "angles": (b"<a@b.c> ", b"From: "),
        "open comments": (b"(", b"From: a@b.c "),
        "quotes": (b'"\\', b"Cc: "),
        "signed fields": (b"x:", b"DKIM-Signature: v=1; a=rsa-sha256; d=a.test; s=s; bh=; b=a; h="),
    }[shape]
    body = start + unit * (size // len(unit))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return b"From: <a@b.test>\r\nTo: <c@d.test>\r\n" + body + b"\r\nbody\r\n"


def _cpu(work: Callable[[], object]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


SHAPES = [
    "short lines",
    "one folded field",
    "bare CRs",
    "encoded words",
    "bad encoded words",
    "addresses",
    "angles",
    "open comments",
    "quotes",
    "signed fields",
]


@settings(max_examples=len(SHAPES), deadline=None, derandomize=True)
@given(st.sampled_from(SHAPES), st.integers(400_000, 600_000))
def test_every_parser_is_linear_on_hostile_shapes(shape: str, size: int) -> None:
    data = _hostile(shape, size)
    resolver = ZoneResolver({})

    def everything() -> None:
        header = split_header(data)
        split_message(data, header)
        parse_message(data, header)
        for field in header:
            text = field.text()
            decode_words(text)
            parse_addresses(text)
            strict_addresses(text)
        header.without(data, lambda f: f.key == "x")
        asyncio.run(verify_dkim(data, resolver, header=header))

    assert _cpu(everything) < CPU_BUDGET


def _fields_line_by_line(data: bytes, stop: int) -> list[tuple[bytes, bytes, int, int]]:
    """The split as the header rules read, one line at a time: (name, value, start, end)."""
    fields: list[tuple[bytes, bytes, int, int]] = []
    current: list[bytes] | None = None  # name, then the value's lines
    start = position = 0
    lines = data[:stop].split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for raw in lines:
        line_end = min(position + len(raw) + 1, stop)
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
        else:
            if current is not None:
                fields.append((current[0], b"\r\n".join(current[1:]) + b"\r\n", start, position))
            name, colon, rest = line.partition(b":")
            valid = colon and name.rstrip(b" \t") and all(
                0x21 <= c <= 0x7E for c in name.rstrip(b" \t")
            )
            current = [name, rest] if valid else None
            start = position
        position = line_end
    if current is not None:
        fields.append((current[0], b"\r\n".join(current[1:]) + b"\r\n", start, position))
    return fields


_header_bytes = st.lists(
    st.sampled_from(
        [b"From: a", b"To:", b" folded", b"\tmore", b"Junk line", b"X  : y", b": empty", b"\r",
         b"A:\r", b"B: \x80\xff", b"C: x\ry", b" ", b"Ok:v"]
    ).flatmap(lambda line: st.sampled_from([line + b"\r\n", line + b"\n", line])),
    max_size=12,
).map(b"".join)


@given(st.one_of(_header_bytes, st.binary(max_size=300)))
def test_the_split_finds_the_fields_a_line_by_line_reading_finds(data: bytes) -> None:
    blank = re.search(rb"\r?\n\r?\n", data)
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        stop = 0  # the header is empty
    elif blank is None:
        stop = len(data)  # all header
    else:  # the empty line's first line end ends the last field
        stop = blank.start() + (2 if data[blank.start()] == 0x0D else 1)
    header = split_header(data)
    assert [(f.name, f.value, f.start, f.end) for f in header] == _fields_line_by_line(data, stop)


_named_header_bytes = st.lists(
    st.sampled_from(
        [b"Content-Type: text/plain", b"content-type:x", b"CONTENT-TRANSFER-ENCODING : qp",
         b"Content-Typo: no", b"X-Content-Type: no", b" Content-Type: folded", b"Content-",
         b"Junk line", b"From: a", b"\tmore", b"\r", b""]
    ).flatmap(lambda line: st.sampled_from([line + b"\r\n", line + b"\n", line])),
    max_size=12,
).map(b"".join)


@given(st.one_of(_named_header_bytes, _header_bytes), st.binary(max_size=40))
def test_a_split_of_some_names_finds_what_the_whole_split_has_of_them(
    data: bytes, body: bytes
) -> None:
    keys = ("content-type", "content-transfer-encoding")
    message = data + b"\r\n\r\n" + body if body else data
    whole, some = split_header(message), split_header(message, only=keys)
    assert some.fields == tuple(f for f in whole if f.key in keys)
    assert (some.size, some.has_body) == (whole.size, whole.has_body)

"""Tests of parsed-message facts: header split, unfolding, RFC 2047, envelope, size, speed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.message import (
    Address,
    ParsedMessage,
    crlf_size,
    decode_words,
    parse_addresses,
    parse_message,
)

SAMPLE = (
    b"Received: from mx.example.org\r\n\tby mail.example.com; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\n"
    b'To: Bob <bob@example.com>, "Smith, Al" <al@example.com>\r\n'
    b"Cc: undisclosed-recipients:;\r\n"
    b"Subject: =?utf-8?b?WmHFvMOzxYLEhw==?=\r\n =?utf-8?q?_g=C4=99=C5=9Bl=C4=85?=\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
    b"Message-ID: <abc@example.org>\r\n"
    b"In-Reply-To: <prev@example.org>\r\n"
    b"\r\n"
    b"Hello\r\n"
)


def test_envelope_and_facts() -> None:
    parsed = parse_message(SAMPLE)
    env = parsed.envelope
    assert parsed.size == len(SAMPLE)
    assert SAMPLE[parsed.header_size :] == b"Hello\r\n"
    assert parsed.subject == "Zażółć gęślą"
    assert env.subject is not None and env.subject.startswith("=?utf-8?b?")  # raw for ENVELOPE
    assert env.from_ == (Address("=?utf-8?q?Zo=C3=AB?=", "zoe", "example.org"),)
    assert env.to == (
        Address("Bob", "bob", "example.com"),
        Address("Smith, Al", "al", "example.com"),
    )
    assert env.cc == (Address(None, "undisclosed-recipients", None), Address(None, None, None))
    assert env.cc[0].is_group_start and env.cc[1].is_group_end
    assert env.message_id == "<abc@example.org>" and env.in_reply_to == "<prev@example.org>"
    assert parsed.date == datetime(2024, 1, 1, 10, tzinfo=timezone(timedelta(hours=1)))
    assert parsed.header("received") == (
        "from mx.example.org\tby mail.example.com; Mon, 1 Jan 2024 10:00:00 +0000"
    )
    assert ("from", "Zoë <zoe@example.org>") in parsed.search_headers


def test_bare_lf_tolerated_and_size_counts_crlf() -> None:
    data = b"Subject: hi\nTo: a@b.c\n\nbody\nmore\n"
    parsed = parse_message(data)
    assert parsed.subject == "hi" and parsed.envelope.to == (Address(None, "a", "b.c"),)
    assert parsed.size == len(data) + 5 == crlf_size(data)
    assert data[parsed.header_size :] == b"body\nmore\n"


def test_no_body_and_no_header() -> None:
    assert parse_message(b"Subject: only\r\n").subject == "only"
    empty_header = parse_message(b"\r\njust body")
    assert empty_header.headers == () and empty_header.header_size == 2
    assert parse_message(b"").size == 0


def test_address_forms() -> None:
    # A comment names a mailbox that has no phrase, as Dovecot's ENVELOPE shows it
    assert parse_addresses("a@b.c (Comment), <d@e.f>") == (
        Address("Comment", "a", "b.c"),
        Address(None, "d", "e.f"),
    )
    assert parse_addresses('"Q \\"x\\"" <@route.example:q@h.example>') == (
        Address('Q "x"', "q", "h.example", "@route.example"),
    )
    assert parse_addresses("team: a@b.c, d@e.f;, z@y.x") == (
        Address(None, "team", None),
        Address(None, "a", "b.c"),
        Address(None, "d", "e.f"),
        Address(None, None, None),
        Address(None, "z", "y.x"),
    )
    assert parse_addresses("") == ()
    assert parse_addresses("nobody")[0] == Address(None, "nobody", "")


def test_decode_words() -> None:
    assert decode_words("=?iso-8859-2?q?=B1?= plain") == "ą plain"
    assert decode_words("=?bogus-charset?q?abc?=") == "abc"
    assert decode_words("=?utf-8?b?!!!notbase64?=") != ""
    assert decode_words("a \t  b") == "a b"


def test_bad_dates_are_unknown() -> None:
    assert parse_message(b"Date: not a date\r\n\r\n").date is None
    naive = parse_message(b"Date: Mon, 1 Jan 2024 10:00:00 -0000\r\n\r\n").date
    assert naive == datetime(2024, 1, 1, 10, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_garbage(data: bytes) -> None:
    assert isinstance(parse_message(data), ParsedMessage)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_garbage_headers(text: str) -> None:
    data = ("From: " + text + "\r\nTo: " + text + "\r\nSubject: " + text + "\r\n\r\n").encode()
    assert isinstance(parse_message(data), ParsedMessage)


_ADDRESS_ALPHABET = 'ab.@<> \t"(),;:\\-+Z9'


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=_ADDRESS_ALPHABET, max_size=24))
def test_the_quick_path_for_one_mailbox_agrees_with_the_tokenizer(value: str) -> None:
    from poczta.message.addresses import _parse_address_list, _simple_mailbox, _tokens

    quick = _simple_mailbox(value)
    if quick is not None:
        assert quick == _parse_address_list(_tokens(value))


@pytest.mark.parametrize(
    "value",
    ["<sender@bench.test>", "alice@example.org", "Alice  Example <alice@example.org>"],
)
def test_common_mailboxes_take_the_quick_path(value: str) -> None:
    from poczta.message.addresses import _simple_mailbox

    assert _simple_mailbox(value) == parse_addresses(value)
    assert _simple_mailbox(value) is not None

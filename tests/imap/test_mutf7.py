"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.imap.mutf7 import Mutf7Error, decode, encode

EXAMPLES = [
    ("INBOX", "INBOX"),
    ("Tom&Jerry", "Tom&-Jerry"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("😀", "&2D3eAA-"),
    ("a\tb", "a&AAk-b"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "wire"), EXAMPLES)
def test_examples(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text
    assert decode(wire.encode("ascii")) == text


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("&Jjo", "unterminated shifted sequence"),
        ("&Jjo!-", "invalid character in shifted sequence"),
        ("&AGE-", "not in canonical modified UTF-7 form"),  # "a" must not be shifted
        ("&AOk-&AOk-", "not in canonical modified UTF-7 form"),  # adjacent runs
        ("&AO-", "shifted sequence is not valid UTF-16"),
        ("&2D0-", "shifted sequence is not valid UTF-16"),  # lone surrogate
        ("caf\u00e9", "non-ASCII character in a modified UTF-7 name"),
        (b"caf\xc3\xa9", "8-bit octet in a modified UTF-7 name"),
        ("&AOl-", "not in canonical modified UTF-7 form"),  # non-zero padding bits
    ],
)
def test_bad_names_are_error_values(wire: str | bytes, reason: str) -> None:
    assert decode(wire) == Mutf7Error(reason)


@given(st.text())
def test_round_trip(text: str) -> None:
    wire = encode(text)
    assert wire.isascii()
    assert decode(wire) == text


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
def test_arbitrary_ascii_decodes_or_is_an_error(wire: str) -> None:
    result = decode(wire)
    assert isinstance(result, Mutf7Error) or encode(result) == wire

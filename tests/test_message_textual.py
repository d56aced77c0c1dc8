"""Binary parts of an APPENDed message are stored base64-encoded (RFC 9051 §4.3): what
BODY[] shows carries no NUL, and BINARY[] gives back the octets the client sent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poczta.message import parse_message
from poczta.message.imap_body import binary_section, bodystructure, section_range
from poczta.message.textual import needs_textual_form, textual_form

SINGLE = (
    b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
)


def _multipart(first: bytes, second: bytes) -> bytes:
    return (
        b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\npreamble\r\n"
        b"--xyz\r\nContent-Type: text/plain\r\n\r\nplain text\r\n"
        b"--xyz\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: Binary\r\n\r\n"
        + first
        + b"\r\n--xyz\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nContent-Transfer-Encoding:\r\n binary\r\n\r\n"
        + second
        + b"\r\n--xyz--\r\n"
    )


def _body_section(data: bytes, path: list[int]) -> bytes:
    structure = parse_message(data).structure
    assert structure is not None
    span = section_range(structure, path)
    assert span is not None
    return data[span[0] : span[1]]


def test_single_part_body_becomes_base64_and_binary_returns_the_octets() -> None:
    content = b"\x00-\xe4\n\r\n\n"
    stored = textual_form(SINGLE + content)
    structure = parse_message(stored).structure
    assert structure is not None
    assert b"\x00" not in stored
    assert b"Content-Transfer-Encoding: base64\r\n" in stored
    assert _body_section(stored, [1]) == b"AC3kCg0KCg==\r\n"
    assert binary_section(stored, structure, [1]) == content
    assert bodystructure(structure)[5] == "base64"  # type: ignore[index]


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_every_binary_leaf_is_converted_and_decodes_back(first: bytes, second: bytes) -> None:
    # Bodies that cannot be mistaken for a boundary line.
    first, second = first.replace(b"-", b"_"), second.replace(b"-", b"_")
    original = _multipart(first, second)
    stored = textual_form(original)
    structure = parse_message(stored).structure
    assert structure is not None
    assert b"\x00" not in stored
    assert binary_section(stored, structure, [1]) == b"plain text"
    assert binary_section(stored, structure, [2]) == first
    assert binary_section(stored, structure, [3, 1]) == second
    assert all(len(line) <= 76 for line in _body_section(stored, [2]).split(b"\r\n"))
    inner = b"Subject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    assert _body_section(stored, [3]).startswith(inner)


@given(st.binary(max_size=200))
def test_a_message_without_binary_parts_is_stored_as_sent(body: bytes) -> None:
    header = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    message = header + body.replace(b"\x00", b"")
    assert textual_form(message) == message


@given(st.binary(max_size=200), st.sampled_from([b"", b"Content-Transfer-Encoding: 8bit\r\n"]))
def test_a_nul_in_a_part_not_labelled_binary_is_encoded_too(body: bytes, field: bytes) -> None:
    body = body.replace(b"-", b"_") + b"\x00"
    original = (
        b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n--xyz\r\n"
        + field
        + b"\r\n"
        + body
        + b"\r\n--xyz--\r\n"
    )
    stored = textual_form(original)
    structure = parse_message(stored).structure
    assert structure is not None
    assert b"\x00" not in stored
    assert structure.parts[0].encoding is not None
    assert structure.parts[0].encoding.strip() == "base64"
    assert binary_section(stored, structure, [1]) == body


def test_conversion_is_asked_for_literal8_or_a_nul() -> None:
    assert needs_textual_form(b"plain", binary_literal=True)
    assert needs_textual_form(b"a\x00b", binary_literal=False)
    assert not needs_textual_form(b"plain\r\n", binary_literal=False)

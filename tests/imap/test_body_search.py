"""SEARCH BODY's shortcuts give what the full decode-and-fold gives, on generated messages."""

from __future__ import annotations

import base64
import binascii
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap.basesubject import search_fold
from poczta.imap.body_search import FOLDS_TO_ASCII, MessageText
from poczta.imap.search_text import body_text

# Letters that fold to ASCII, combining marks that NFC merges into an ASCII letter,
# HTML's markup and references, line ends: what the shortcuts must not be fooled by.
_ALPHABET = "abcdefhiklnst ;`&<>#\r\n" + FOLDS_TO_ASCII + "\u0301\u0338\u00e9\u017c\u0142"
_CHARSETS = [
    None,
    "utf-8",
    "us-ascii",
    "iso-8859-2",
    "windows-1252",
    "utf-16",
    "utf-7",
    "iso-2022-jp",
    "koi8-r",
    "x-unknown",
    "latin1",
]
_ENCODINGS = ["", "7bit", "8bit", "base64", "quoted-printable"]


def _encoded(text: str, charset: str | None, encoding: str) -> bytes:
    octets = (
        text.encode(charset or "utf-8", "replace")
        if charset != "x-unknown"
        else text.encode("utf-8")
    )
    if encoding == "base64":
        return base64.encodebytes(octets).replace(b"\n", b"\r\n")
    if encoding == "quoted-printable":
        return binascii.b2a_qp(octets).replace(b"\n", b"\r\n")
    return octets


@st.composite
def _leaf(draw: st.DrawFn) -> bytes:
    text = draw(st.text(_ALPHABET, max_size=40))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", "<b>", "&amp;", "&#108;", "<p>x</p>"])).join(
            text.split(" ")
        )
    charset = draw(st.sampled_from(_CHARSETS))
    encoding = draw(st.sampled_from(_ENCODINGS))
    kind = draw(st.sampled_from(["text/plain", "text/html", "TEXT/HTML", "application/x"]))
    head = f"Content-Type: {kind}" + (f'; charset="{charset}"' if charset else "") + "\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    return head.encode() + b"\r\n" + _encoded(text, charset, encoding)


def _multipart(parts: list[bytes], kind: str = "mixed") -> bytes:
    boundary = f"b{len(parts)}x{sum(map(len, parts))}"
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return (
        f'Content-Type: multipart/{kind}; boundary="{boundary}"\r\n\r\npreamble\r\n'.encode()
        + body
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )


def _embedded(inner: bytes) -> bytes:
    header = b"Subject: =?utf-8?q?li=C3=9Fghthouse?=\r\nX-Note: caf\xc3\xa9 K\r\n"
    return b"Content-Type: message/rfc822\r\n\r\n" + header + inner


_messages = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(_multipart),
        st.lists(inner, min_size=1, max_size=2).map(lambda parts: _multipart(parts, "digest")),
        inner.map(_embedded),
    ),
    max_leaves=5,
)


_NEEDLES = [
    "s",
    "ss",
    "st",
    "fi",
    "k",
    "i",
    ";",
    "`",
    "e",
    "li",
    "lighthouse",
    "x",
    "é",
    "ż",
    "<b>",
    "&",
    "\n",
    "a b",
    "",
]


@settings(max_examples=250, deadline=None)
@given(
    _messages,
    st.sampled_from([10**7, 60, 5]),
    st.sampled_from(_NEEDLES),
    st.floats(0, 1),
    st.integers(1, 8),
)
def test_the_shortcuts_answer_as_the_full_text_does(
    raw: bytes, limit: int, word: str, where: float, length: int
) -> None:
    # Half the time a piece of the message's own text, so that matches are common.
    text = body_text(raw)
    if text and where < 0.5:
        start = int(where * 2 * (len(text) - 1))
        word = text[start : start + length]
    needle = search_fold(word)
    expected = needle in search_fold(body_text(raw, limit))
    searched = MessageText(raw, limit)
    assert searched.contains(needle) == expected
    assert searched.contains(needle) == expected  # and again, from what the first kept


def test_a_word_is_found_in_any_part_and_not_in_attachments() -> None:
    raw = b"Subject: s\r\n" + _multipart(
        [
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + "Zażółć Lighthouse".encode(),
            b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"secretword"),
            b"Content-Type: text/html\r\n\r\n<p>Stra&szlig;e</p>",
        ]
    )
    text = MessageText(raw)
    assert text.contains("lighthouse") and text.contains("strasse")
    assert not text.contains("secretword") and not text.contains("Lighthouse".lower() + "x")
    assert MessageText(b"").contains("") and not MessageText(b"").contains("a")


def test_a_folded_ligature_or_sharp_s_is_not_missed_by_the_octet_test() -> None:
    raw = "Content-Type: text/plain; charset=utf-8\r\n\r\nGro\u00df \ufb01le".encode()
    assert MessageText(raw).contains("ss") and MessageText(raw).contains("file")
    latin = "Content-Type: text/plain; charset=iso-8859-2\r\n\r\nStra\u00dfe".encode("latin-1")
    assert MessageText(latin).contains("strasse")


def test_folds_to_ascii_names_every_character_that_folds_to_ascii() -> None:
    chars = [chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xE000]
    # U+E000 (left out) is a starter that folds to itself: each character's fold is kept apart.
    folded = unicodedata.normalize("NFC", "\ue000".join(chars).casefold()).split("\ue000")
    assert len(folded) == len(chars)
    changed = [(c, f) for c, f in zip(chars, folded, strict=True) if f != c]
    found = {c for c, f in changed if any(x.isascii() for x in f)}
    assert found == set(FOLDS_TO_ASCII)

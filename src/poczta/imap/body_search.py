"""SEARCH BODY's test of one message: whether its searchable text holds a folded needle,
deciding on the undecoded octets of a part wherever that gives the same answer.

`MessageText(raw).contains(needle)` answers exactly what
`needle in search_fold(body_text(raw))` answers (the needle folded by `search_fold`),
without building and folding the whole text when it need not:

- The text is its pieces (`search_text.leaves`) joined by line feeds, and folding keeps
  a line feed where it is (case folding is per character, and NFC never composes across
  a line feed), so a needle without one is in the folded text exactly when it is in one
  folded piece: the pieces are tried in turn, the first match ends the search.
- An ASCII needle and a piece whose charset decodes every ASCII octet to itself and
  every other octet to a non-ASCII character (UTF-8, and single-octet charsets such as
  ISO-8859-x and windows-125x): folding maps ASCII letters to their lower case, and no
  other character to anything with ASCII in it, save the few of `FOLDS_TO_ASCII`
  ("ß" to "ss", "ﬁ" to "fi", the Kelvin sign to "k", ...). NFC may merge an ASCII
  letter into a following combining mark, but never joins two runs of ASCII. So when
  the octets hold none of those few characters for a letter of the needle, the needle
  is in the folded piece only if its octets are in the octets with ASCII lower-cased:
  a cheap test that says "no" for most messages. A "yes" is checked on the decoded,
  folded piece. HTML parts take the shortcut when they have no character reference
  ("&") and the needle no space: a tag becomes a space and splits a word, it never
  joins two.
- The text stops after `limit` characters as `body_text`'s does; a message that might
  reach it is searched the slow way, which cuts it where `body_text` does.

Anything else (a needle with a line feed, or a non-ASCII one) is looked for in each
folded piece, the same answer at the cost of decoding.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

from poczta.imap.basesubject import search_fold
from poczta.imap.search_text import DEFAULT_TEXT_LIMIT, Leaf, body_text, leaves

__all__ = ["FOLDS_TO_ASCII", "MessageText"]

#: Every non-ASCII character that case folding and NFC turn into text with ASCII in it
#: (a test checks the list against the whole of Unicode for the Python that runs).
FOLDS_TO_ASCII = (
    "\u00df\u0130\u0149\u017f\u037e\u1e9a\u1e9e\u1fef\u212a"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
)


class MessageText:
    """The searchable text of one message, decoded only as far as its searches need."""

    def __init__(self, raw: bytes, limit: int = DEFAULT_TEXT_LIMIT) -> None:
        self._raw = raw
        self._limit = limit
        self._leaves: list[Leaf] | None = None
        # Pieces decoded so far, by index: folded, and the length of the unfolded text.
        self._pieces: dict[int, tuple[str, int]] = {}
        self._whole: str | None = None  # the whole folded text, when searched that way

    def contains(self, needle: str) -> bool:
        """Whether `needle` (folded by `search_fold`) is in the message's folded text."""
        if not needle:
            return True
        if "\n" in needle:
            return needle in self._whole_text()
        if self._leaves is None:
            self._leaves = list(leaves(self._raw))
        octets = needle.encode("ascii") if needle.isascii() else None
        bound = 0  # at least the length of the text so far, as `body_text` counts it
        for index, leaf in enumerate(self._leaves):
            if octets is not None and leaf.header is None and _plainly_without(leaf, octets):
                bound += len(leaf.octets) + 1  # decoding never makes more characters
            else:
                piece, length = self._piece(index)
                bound += length + 1
                if needle in piece:
                    return bound <= self._limit or needle in self._whole_text()
            if bound > self._limit:
                return needle in self._whole_text()
        return False

    def _piece(self, index: int) -> tuple[str, int]:
        piece = self._pieces.get(index)
        if piece is None:
            assert self._leaves is not None
            text = self._leaves[index].text()
            piece = self._pieces[index] = (search_fold(text), len(text))
        return piece

    def _whole_text(self) -> str:
        if self._whole is None:
            self._whole = search_fold(body_text(self._raw, self._limit))
        return self._whole


def _plainly_without(leaf: Leaf, needle: bytes) -> bool:
    """Whether the octets of `leaf` show, undecoded, that ASCII `needle` is not in it."""
    if leaf.html and (b"&" in leaf.octets or b" " in needle):
        return False
    traps = _traps(_text_codec(leaf.charset), needle)
    if traps is None:
        return False
    data = leaf.octets
    # Only the other octets can hold a trap; they are few, and a trap is a run of them,
    # so it is still whole when the ASCII octets around it are taken out.
    if traps is not _NO_TRAP and not data.isascii() and traps.search(data.translate(None, _ASCII)):
        return False
    return needle not in data.lower()


_ASCII = bytes(range(128))


@lru_cache(maxsize=256)
def _text_codec(charset: str | None) -> str:
    """The codec `search_text` decodes a part of `charset` with, by its canonical name."""
    name = (charset or "utf-8").strip().lower()
    if name in ("us-ascii", "ascii"):
        return "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


@lru_cache(maxsize=256)
def _traps(codec: str, needle: bytes) -> re.Pattern[bytes] | None:
    """A pattern of the octets in `codec` of the characters of `FOLDS_TO_ASCII` that fold
    to a letter of `needle` (`_NO_TRAP` when there are none); None when `codec` does not
    keep ASCII octets apart from the others."""
    if not _ascii_transparent(codec):
        return None
    letters = set(needle.decode("ascii"))
    found = []
    for char in FOLDS_TO_ASCII:
        if letters & set(search_fold(char)):
            try:
                found.append(char.encode(codec))
            except UnicodeEncodeError:
                continue  # the charset cannot write it
    if not found:
        return _NO_TRAP
    return re.compile(b"|".join(re.escape(trap) for trap in found))


_NO_TRAP = re.compile(b"(?!)")


@lru_cache(maxsize=64)
def _ascii_transparent(codec: str) -> bool:
    """Whether `codec` decodes each ASCII octet to itself and every octet sequence
    without ASCII to characters without ASCII (and never more characters than octets):
    UTF-8, or a stateless single-octet charset whose upper half is not ASCII."""
    if codec == "utf-8":
        return True
    every = bytes(range(256))
    try:
        decoded = every.decode(codec, "replace")
        one_by_one = [bytes([octet]).decode(codec, "replace") for octet in every]
    except Exception:  # a codec that fails on its own input is not one to shortcut
        return False
    return (
        len(decoded) == 256
        and list(decoded) == one_by_one
        and decoded[:128] == every[:128].decode("ascii")
        and not any(char.isascii() for char in decoded[128:])
    )

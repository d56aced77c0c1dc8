"""Text comparison for SEARCH, SORT and THREAD: case folding, i;unicode-casemap, base subject.

- `search_fold` is what SEARCH substring matching compares: the text case-folded and
  NFC-normalised, so "STRASSE" finds "Straße" and a decomposed "é" finds a precomposed one.
- `casemap_key` is RFC 5051's i;unicode-casemap as a sort key: each character mapped to
  its titlecase form, then the whole string fully decomposed (NFD); keys compare by code
  point, which is the octet order of their UTF-8 form the RFC asks for. Python's
  per-character `str.title()` gives the Unicode titlecase mapping (including expansions
  such as "ß" → "Ss"); ASCII text takes the shortcut of `str.upper()`, which agrees there.
- `base_subject` is RFC 5256 section 2.1: the subject without reply and forward markers,
  list tags and "(fwd)" trailers, found in one left-to-right pass of index moves (no
  repeated slicing or backtracking patterns, so a hostile subject costs linear time).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import NamedTuple

__all__ = ["BaseSubject", "base_subject", "casemap_key", "search_fold"]

_WHITESPACE_RUN = re.compile(r"[ \t\r\n]+")
_WSP = " \t"
_MAYBE_MARKED = re.compile(r"[:\[(\t\r\n]|  |^ | $")


def search_fold(text: str) -> str:
    """`text` case-folded and NFC-normalised, for SEARCH substring matching."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFC", text.casefold())


@lru_cache(maxsize=4096)
def _titlecase(char: str) -> str:
    return char.title()


def casemap_key(text: str) -> str:
    """The i;unicode-casemap (RFC 5051) sort key of `text`."""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFD", "".join(_titlecase(char) for char in text))


class BaseSubject(NamedTuple):
    """A base subject, and whether reply/forward markers were removed to find it."""

    text: str
    reply_or_forward: bool


def _strip_trailers(subject: str, start: int, end: int) -> tuple[int, bool]:
    """Step 2: drop trailing whitespace and "(fwd)" trailers; the new end."""
    removed = False
    while end > start:
        if subject[end - 1] in _WSP:
            end -= 1
        elif end - start >= 5 and subject[end - 5 : end].lower() == "(fwd)":
            end -= 5
            removed = True
        else:
            break
    return end, removed


def _blob_end(subject: str, position: int, end: int) -> int:
    """The end of a `[blob]` and the whitespace after it at `position`, or -1."""
    if position >= end or subject[position] != "[":
        return -1
    index = position + 1
    while index < end and subject[index] not in "[]":
        index += 1
    if index >= end or subject[index] != "]":
        return -1
    index += 1
    while index < end and subject[index] in _WSP:
        index += 1
    return index


def _refwd_end(subject: str, position: int, end: int) -> int:
    """The end of `re:`, `fw:`, `fwd:` (with optional `[blob]`) at `position`, or -1."""
    head = subject[position : position + 3].lower()
    if head.startswith("re"):
        index = position + 2
    elif head == "fwd":
        index = position + 3
    elif head.startswith("fw"):
        index = position + 2
    else:
        return -1
    while index < end and subject[index] in _WSP:
        index += 1
    after_blob = _blob_end(subject, index, end)
    if after_blob != -1:
        index = after_blob
    if index < end and subject[index] == ":":
        return index + 1
    return -1


def _has_text(subject: str, start: int, end: int) -> bool:
    return any(subject[index] not in _WSP for index in range(start, end))


def _strip_leaders(subject: str, start: int, end: int) -> tuple[int, bool]:
    """Steps 3 to 5: drop leading whitespace, `re:`/`fwd:` markers and `[blob]`s."""
    removed = False
    while start < end:
        if subject[start] in _WSP:
            start += 1
            continue
        # Any number of blobs, then a reply/forward marker: a leader (step 3).
        index, last_blob = start, -1
        while (after := _blob_end(subject, index, end)) != -1:
            last_blob, index = index, after
        marker_end = _refwd_end(subject, index, end)
        if marker_end != -1:
            start, removed = marker_end, True
            continue
        if last_blob == -1:
            break
        # Blobs without a marker are dropped one by one while a subject remains (step 4);
        # repeating that removes them all unless the last one is the whole subject.
        if _has_text(subject, index, end):
            start = index
            continue
        return last_blob, removed
    return start, removed


@lru_cache(maxsize=16384)
def base_subject(subject: str) -> BaseSubject:
    """The base subject of `subject` (already RFC 2047-decoded), RFC 5256 section 2.1.

    Cached: a mailbox repeats its subjects (every reply in a thread), and SORT and
    THREAD ask for each message's.
    """
    if _MAYBE_MARKED.search(subject) is None:  # nothing to remove: the common case
        return BaseSubject(subject, False)
    if "\t" in subject or "\n" in subject or "  " in subject or "\r" in subject:
        subject = _WHITESPACE_RUN.sub(" ", subject)
    start, end = 0, len(subject)
    reply_or_forward = False
    while True:
        end, trailer = _strip_trailers(subject, start, end)
        start, leader = _strip_leaders(subject, start, end)
        reply_or_forward = reply_or_forward or trailer or leader
        # Step 6: a "[fwd: ...]" wrapper is removed and the whole process repeated.
        wrapped = subject[start : start + 5].lower() == "[fwd:" and subject[end - 1] == "]"
        if end - start >= 6 and wrapped:
            start, end = start + 5, end - 1
            reply_or_forward = True
            continue
        break
    text = subject[start:end].strip(_WSP)
    return BaseSubject(text, reply_or_forward)

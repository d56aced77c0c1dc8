"""IMAP sequence sets and UID sets: parsing, resolving `*` and `$`, and compaction.

A `SequenceSet` keeps the ranges as the client wrote them, so `1:4294967295`
costs one pair, never a list of numbers. `*` is stored as `STAR` and resolved
against the mailbox's largest number only when the session asks; `$` (SEARCHRES,
RFC 5182) is a set of its own (`saved=True`) that the session replaces with the
saved search result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

STAR = 0
MAX_NUMBER = 0xFFFFFFFF

Range = tuple[int, int]


class SequenceSyntaxError(ValueError):
    """The text is not a valid sequence set."""


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set: ranges as written (`STAR` for `*`), or `$` when `saved`.

    A single number n is the range (n, n). Ranges may be written in either order
    and may overlap; `resolve` normalises them.
    """

    ranges: tuple[Range, ...] = ()
    saved: bool = False

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """The compact set holding exactly `numbers` (each 1..2^32-1)."""
        return cls(tuple(_runs(numbers)))

    @property
    def uses_star(self) -> bool:
        """True when `*` appears, so the set depends on the mailbox's size."""
        return any(STAR in pair for pair in self.ranges)

    def resolve(self, largest: int) -> tuple[Range, ...]:
        """Sorted, merged, non-overlapping (low, high) ranges with `*` = `largest`.

        Not clipped to `largest`: for UID sets numbers beyond it simply match
        nothing, while for message sequence numbers they are the client's error,
        which the session reports. A `$` set raises ValueError: substitute it first.
        """
        if self.saved:
            raise ValueError("resolve the saved search result ($) before the set")
        pairs = []
        for low, high in self.ranges:
            low = largest if low == STAR else low
            high = largest if high == STAR else high
            pairs.append((low, high) if low <= high else (high, low))
        pairs.sort()
        merged: list[Range] = []
        for low, high in pairs:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return tuple(merged)

    def contains(self, number: int, largest: int) -> bool:
        """Whether `number` is in the set when the largest number in use is `largest`."""
        for low, high in self.ranges:
            low = largest if low == STAR else low
            high = largest if high == STAR else high
            if min(low, high) <= number <= max(low, high):
                return True
        return False

    def numbers(self, largest: int) -> Iterator[int]:
        """The members up to `largest`, ascending (never beyond it, however wide the set)."""
        for low, high in self.resolve(largest):
            yield from range(max(low, 1), min(high, largest) + 1)

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return ",".join(_pair_text(low, high) for low, high in self.ranges)


def _number_text(number: int) -> str:
    return "*" if number == STAR else str(number)


def _pair_text(low: int, high: int) -> str:
    if low == high:
        return _number_text(low)
    return f"{_number_text(low)}:{_number_text(high)}"


def _runs(numbers: Iterable[int]) -> Iterator[Range]:
    ordered = sorted(set(numbers))
    if not ordered:
        return
    if ordered[0] < 1 or ordered[-1] > MAX_NUMBER:
        raise ValueError("sequence numbers and UIDs are 1..4294967295")
    start = previous = ordered[0]
    for number in ordered[1:]:
        if number != previous + 1:
            yield (start, previous)
            start = number
        previous = number
    yield (start, previous)


def compact(numbers: Iterable[int]) -> str:
    """The shortest sequence-set text for `numbers`: `1:5,7` ("" for none)."""
    return ",".join(_pair_text(low, high) for low, high in _runs(numbers))


def _parse_number(text: str) -> int:
    if text.isdigit() and text.isascii() and text[0] != "0":
        number = int(text) if len(text) <= 10 else MAX_NUMBER + 1
        if number > MAX_NUMBER:
            raise SequenceSyntaxError("number in sequence set exceeds 4294967295")
        return number
    if text == "*":
        return STAR
    raise SequenceSyntaxError(f"invalid number {text[:20]!r} in sequence set")


def parse_sequence_set(text: str, *, allow_saved: bool = True) -> SequenceSet:
    """Parse `1:4,7,9:*` or `$`; raise SequenceSyntaxError on anything else."""
    if text == "$":
        if not allow_saved:
            raise SequenceSyntaxError("$ is not allowed here")
        return SequenceSet(saved=True)
    if not text:
        raise SequenceSyntaxError("empty sequence set")
    if text.isdigit():  # the most common set: one number
        number = _parse_number(text)
        return SequenceSet(((number, number),))
    ranges: list[Range] = []
    for item in text.split(","):
        low, colon, high = item.partition(":")
        first = _parse_number(low)
        ranges.append((first, _parse_number(high) if colon else first))
    return SequenceSet(tuple(ranges))

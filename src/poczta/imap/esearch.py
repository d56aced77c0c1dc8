"""ESEARCH results (RFC 4731) and what SAVE keeps for `$` (RFC 5182), from matched numbers.

`search_return(numbers, options)` answers `RETURN (options)` for the numbers a search
matched (sequence numbers, or UIDs for UID SEARCH, ascending): MIN, MAX, COUNT, ALL
as a compact sequence set, and with SAVE the numbers the session keeps as the saved
result. `RETURN ()` means ALL. `esearch_response` builds the `* ESEARCH` line, or None
when SAVE is the only option (RFC 5182 section 2.1: no response then).

With SAVE and only MIN and/or MAX besides, the saved result is just those messages;
with ALL or COUNT among the options it is every match (RFC 5182 section 2.4).

For a SORT with RETURN (ESORT, RFC 5267) pass the numbers in sort order and
`ordered=True`: ALL then keeps that order, merging only ascending runs (`3:4,2,1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from poczta.imap.encoder import Data, esearch_data
from poczta.imap.sequence import compact

__all__ = ["SearchReturn", "esearch_response", "ordered_set", "search_return"]


@dataclass(frozen=True, slots=True)
class SearchReturn:
    """The answer to a RETURN (...) list; None for what was not asked (or is empty)."""

    minimum: int | None = None
    maximum: int | None = None
    count: int | None = None
    all: str | None = None
    saved: tuple[int, ...] | None = None  # with SAVE: what `$` becomes
    respond: bool = True  # False when SAVE was the only option


def ordered_set(numbers: Sequence[int]) -> str:
    """`numbers` as sequence-set text in their given order: ascending runs become ranges."""
    parts: list[str] = []
    index = 0
    while index < len(numbers):
        start = index
        while index + 1 < len(numbers) and numbers[index + 1] == numbers[index] + 1:
            index += 1
        low, high = numbers[start], numbers[index]
        parts.append(str(low) if low == high else f"{low}:{high}")
        index += 1
    return ",".join(parts)


def search_return(
    numbers: Sequence[int], options: Sequence[str], *, ordered: bool = False
) -> SearchReturn:
    """The RETURN (`options`) answer for matched `numbers` (ascending unless `ordered`)."""
    wanted = set(options) or {"ALL"}
    has_min, has_max = "MIN" in wanted, "MAX" in wanted
    minimum = min(numbers) if numbers and has_min else None
    maximum = max(numbers) if numbers and has_max else None
    saved: tuple[int, ...] | None = None
    if "SAVE" in wanted:
        if wanted & {"ALL", "COUNT"} or not (has_min or has_max):
            saved = tuple(numbers)
        else:
            saved = tuple(sorted({n for n in (minimum, maximum) if n is not None}))
    listed = None
    if "ALL" in wanted and numbers:
        listed = ordered_set(numbers) if ordered else compact(numbers)
    return SearchReturn(
        minimum=minimum,
        maximum=maximum,
        count=len(numbers) if "COUNT" in wanted else None,
        all=listed,
        saved=saved,
        respond=wanted != {"SAVE"},
    )


def esearch_response(
    tag: str | None, result: SearchReturn, *, uid: bool, modseq: int | None = None
) -> Data | None:
    """The `* ESEARCH (TAG "t") [UID] ...` line for `result`; None when none is due."""
    if not result.respond:
        return None
    return esearch_data(
        tag,
        uid=uid,
        minimum=result.minimum,
        maximum=result.maximum,
        count=result.count,
        all=result.all,
        modseq=modseq,
    )

"""Sequence sets: what `1:5,7`, `*` and `$` mean against a mailbox, at any size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.imap.sequence import (
    STAR,
    SequenceSet,
    SequenceSyntaxError,
    compact,
    parse_sequence_set,
)


def test_ranges_in_either_order_and_star() -> None:
    numbers = parse_sequence_set("9:7,2,*,5:*")
    assert numbers.ranges == ((9, 7), (2, 2), (STAR, STAR), (5, STAR))
    assert numbers.resolve(12) == ((2, 2), (5, 12))
    assert list(numbers.numbers(8)) == [2, 5, 6, 7, 8]
    assert numbers.contains(12, 12) and not numbers.contains(3, 12)
    assert str(numbers) == "9:7,2,*,5:*"
    assert numbers.uses_star


def test_star_below_the_low_end_is_the_upper_range_reversed() -> None:
    # RFC 9051 6.4.8: UID range 559:* with largest UID 500 still includes UID 500.
    uids = parse_sequence_set("559:*")
    assert uids.contains(500, 500)
    assert uids.resolve(500) == ((500, 559),)


def test_huge_range_is_one_pair_and_bounded_by_the_mailbox() -> None:
    whole = parse_sequence_set("1:4294967295")
    assert whole.ranges == ((1, 4294967295),)
    assert sum(1 for _ in whole.numbers(3)) == 3
    assert whole.contains(4294967295, 10)


def test_saved_result() -> None:
    saved = parse_sequence_set("$")
    assert saved.saved and str(saved) == "$"
    with pytest.raises(ValueError):
        saved.resolve(3)
    with pytest.raises(SequenceSyntaxError):
        parse_sequence_set("$", allow_saved=False)


@pytest.mark.parametrize("text", ["", "0", "1:", ":1", "1,,2", "01", "4294967296", "1:2:3", "$,1"])
def test_invalid_sets(text: str) -> None:
    with pytest.raises(SequenceSyntaxError):
        parse_sequence_set(text)


def test_compact() -> None:
    assert compact([7, 1, 2, 3, 4, 5, 5]) == "1:5,7"
    assert compact([]) == ""
    assert str(SequenceSet.of([3, 1, 2, 10])) == "1:3,10"
    with pytest.raises(ValueError):
        compact([0])


@given(st.sets(st.integers(min_value=1, max_value=400)))
def test_compaction_holds_exactly_the_numbers(numbers: set[int]) -> None:
    text = compact(numbers)
    if not numbers:
        assert text == ""
        return
    parsed = parse_sequence_set(text)
    assert set(parsed.numbers(400)) == numbers
    assert parsed.resolve(400) == parsed.ranges  # compact ranges are already normal


@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=8),
    st.integers(1, 60),
)
def test_resolve_agrees_with_membership(pairs: list[tuple[int, int]], largest: int) -> None:
    numbers = SequenceSet(tuple(pairs))
    members = {n for n in range(1, 61) if numbers.contains(n, largest)}
    resolved = {n for low, high in numbers.resolve(largest) for n in range(low, high + 1)}
    assert members == resolved - {0}
    assert set(numbers.numbers(largest)) == {n for n in members if n <= largest}

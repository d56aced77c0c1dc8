"""SORT: the order a client gets for each sort key, base subjects and i;unicode-casemap."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap.basesubject import base_subject, casemap_key, search_fold
from poczta.imap.commands import SortKey
from poczta.imap.message_commands import SORT_KEYS
from poczta.imap.sort import SORT_VALUES, sort_numbers
from poczta.store.base import MessageMeta
from tests.imap.imaptest_replay import check_script, script_params
from tests.imap.messages import BASE_DATE, mailboxes, message


def order(box: list[MessageMeta], *keys: str) -> list[int]:
    parsed = [SortKey(k.removeprefix("REVERSE "), k.startswith("REVERSE ")) for k in keys]
    return sort_numbers(parsed, range(1, len(box) + 1), box)


@pytest.mark.parametrize(("subject", "base", "reply"), [
    ("Hello", "Hello", False),
    ("Re: Hello", "Hello", True),
    ("RE:Re: re:  Hello  ", "Hello", True),
    ("Fwd: Hello", "Hello", True),
    ("Fw: Hello (fwd)", "Hello", True),
    ("Hello (fwd) (FWD)", "Hello", True),
    ("[list] Re: Hello", "Hello", True),
    ("Re[2]: Hello", "Hello", True),
    ("[list] Hello", "Hello", False),
    ("[a][b] [c] Hello", "Hello", False),
    ("[list]", "[list]", False),
    ("[a] [b]", "[b]", False),
    ("[fwd: Re: Hello]", "Hello", True),
    ("[Fwd: [list] Hello] (fwd)", "Hello", True),
    ("Re: [fwd: [list] Re: x]", "x", True),
    ("  tabs\tand  \r\n spaces ", "tabs and spaces", False),
    ("Rehearsal", "Rehearsal", False),
    ("Fwdx: no", "Fwdx: no", False),
    ("re:", "", True),
    ("", "", False),
])
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject(subject) == (base, reply)


def test_base_subject_of_hostile_subjects_is_linear() -> None:
    for subject in ("[a]" * 20000, "re:" * 20000 + "x", "[" * 40000, "(fwd)" * 20000,
                    "[fwd:" * 10000 + "x" + "]" * 10000, "[x" * 20000):
        assert isinstance(base_subject(subject).text, str)


def test_casemap_key_ignores_case_and_composition() -> None:
    assert casemap_key("hello") == casemap_key("HELLO") == casemap_key("Hello")
    assert casemap_key("\u00e9t\u00e9") == casemap_key("E\u0301TE\u0301")
    assert casemap_key("a") < casemap_key("B") < casemap_key("c")
    assert search_fold("STRASSE") == search_fold("straße")


DATED = [
    message(uid=1, subject="b", date="Wed, 01 May 2024 10:00:00 +0000",
            internal_date=BASE_DATE + timedelta(hours=3), **{"from": "Zed <a@x>"},
            to="carol@x", cc="Bob <bob@x>"),
    message("longer body\r\n" * 5, uid=2, subject="Re: A",
            date="Wed, 01 May 2024 09:00:00 +0200", internal_date=BASE_DATE,
            **{"from": "ann@x"}, to="Al <zz@x>"),
    message(uid=3, subject="[list] a", internal_date=BASE_DATE + timedelta(hours=1),
            **{"from": "=?utf-8?q?=C3=89mile?= <m@x>"}, to="dave@x", cc="al@x"),
    message(uid=4, subject="Fwd: B", date="garbage", internal_date=BASE_DATE,
            **{"from": "Bob <Bob@x>"}),
]


@pytest.mark.parametrize(("keys", "expected"), [
    (("ARRIVAL",), [2, 4, 3, 1]),  # ties by sequence number
    (("REVERSE ARRIVAL",), [1, 3, 2, 4]),  # ... which REVERSE leaves ascending
    (("DATE",), [2, 1, 4, 3]),  # no or a bad Date: uses the internal date
    (("SUBJECT",), [2, 3, 1, 4]),
    (("SUBJECT", "REVERSE ARRIVAL"), [3, 2, 1, 4]),
    (("FROM",), [1, 2, 4, 3]),  # local parts: a, ann, Bob, m
    (("DISPLAYFROM",), [2, 4, 3, 1]),  # ann@x, Bob, Émile (decomposed: with E), Zed
    (("TO",), [4, 1, 3, 2]),  # no To sorts first
    (("DISPLAYTO",), [4, 2, 1, 3]),
    (("CC",), [2, 4, 3, 1]),
])
def test_sort_keys(keys: tuple[str, ...], expected: list[int]) -> None:
    assert order(DATED, *keys) == expected


def test_size_sorts_by_rfc822_size() -> None:
    box = [message("x" * n, uid=index) for index, n in enumerate((30, 10, 20, 10), 1)]
    assert order(box, "SIZE") == [2, 4, 3, 1]
    assert order(box, "REVERSE SIZE") == [1, 3, 2, 4]
    assert order(box, "SIZE", "REVERSE ARRIVAL") == [2, 4, 3, 1]  # equal arrival: by number


def test_sort_only_the_given_numbers() -> None:
    assert sort_numbers([SortKey("ARRIVAL", True)], [4, 1], DATED) == [1, 4]


_keys = st.lists(st.builds(SortKey, st.sampled_from(sorted(SORT_KEYS)), st.booleans()),
                 min_size=1, max_size=3)


@settings(max_examples=100, deadline=None)
@given(mailboxes(), _keys)
def test_sort_is_a_permutation_and_reverse_twice_is_the_identity(
        box: list[MessageMeta], keys: list[SortKey]) -> None:
    numbers = list(range(1, len(box) + 1))
    sorted_numbers = sort_numbers(keys, numbers, box)
    assert sorted(sorted_numbers) == numbers
    flipped = [SortKey(key.name, not key.reverse) for key in keys]
    twice = [SortKey(key.name, not key.reverse) for key in flipped]
    assert sort_numbers(twice, numbers, box) == sorted_numbers


@settings(max_examples=100, deadline=None)
@given(mailboxes(), st.sampled_from(sorted(SORT_KEYS)), st.booleans())
def test_one_key_orders_by_its_value_then_by_sequence_number(
        box: list[MessageMeta], name: str, reverse: bool) -> None:
    numbers = sort_numbers([SortKey(name, reverse)], range(1, len(box) + 1), box)
    values = [SORT_VALUES[name](box[number - 1]) for number in numbers]
    pairs = list(zip(numbers, values, strict=True))
    for (a, value_a), (b, value_b) in pairwise(pairs):
        assert (value_a > value_b if reverse else value_a < value_b) or (
            value_a == value_b and a < b)


@pytest.mark.parametrize("path", script_params("sort-", "esort"))
def test_dovecot_sort_scripts(path: Path) -> None:
    check_script(path)

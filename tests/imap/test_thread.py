"""THREAD: the threads a client gets from ORDEREDSUBJECT and REFERENCES."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap.encoder import Thread, ThreadData
from poczta.imap.thread import message_ids, thread_numbers
from poczta.store.base import MessageMeta
from tests.imap.imaptest_replay import check_script, script_params
from tests.imap.messages import BASE_DATE, mailboxes, message


def wire(algorithm: str, box: list[MessageMeta], numbers: list[int] | None = None) -> bytes:
    chosen = list(range(1, len(box) + 1)) if numbers is None else numbers
    return ThreadData(thread_numbers(algorithm, chosen, box)).encode()


def mail(uid: int, hours: int, subject: str = "topic", **fields: str) -> MessageMeta:
    date = (BASE_DATE + timedelta(hours=hours)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return message(uid=uid, subject=subject, date=date, **fields)


def test_message_ids() -> None:
    assert message_ids("<a@b> junk <c@d>\t<e@f>") == ["a@b", "c@d", "e@f"]
    assert message_ids("no ids") == [] and message_ids(None) == []


def test_references_builds_chains_and_branches() -> None:
    box = [
        mail(1, 0, message_id="<1@x>"),
        mail(2, 1, message_id="<2@x>", references="<1@x>"),
        mail(3, 2, message_id="<3@x>", references="<1@x> <2@x>"),
        mail(4, 3, message_id="<4@x>", in_reply_to="<1@x>"),
        mail(5, 4, "other", message_id="<5@x>"),
    ]
    assert wire("REFERENCES", box) == b"* THREAD (1 (2 3)(4))(5)\r\n"


def test_references_a_missing_parent_becomes_a_dummy_root() -> None:
    box = [
        mail(1, 0, "a", message_id="<1@x>", references="<gone@x>"),
        mail(2, 1, "b", message_id="<2@x>", references="<gone@x>"),
        mail(3, 2, "c", message_id="<3@x>", references="<only-one@x>"),
    ]
    # Two children of a missing message stay together; a single one is promoted.
    assert wire("REFERENCES", box) == b"* THREAD ((1)(2))(3)\r\n"


def test_references_groups_roots_by_base_subject() -> None:
    box = [
        mail(1, 0, "Plans", message_id="<1@x>"),
        mail(2, 1, "Re: plans", message_id="<2@x>"),  # no references, a reply by subject
        mail(3, 2, "plans", message_id="<3@x>"),  # both non-replies: siblings under a dummy
    ]
    assert wire("REFERENCES", box, [1, 2]) == b"* THREAD (1 2)\r\n"
    assert wire("REFERENCES", box) == b"* THREAD ((1 2)(3))\r\n"


def test_references_survives_loops_duplicates_and_missing_ids() -> None:
    box = [
        mail(1, 0, "a", message_id="<1@x>", references="<2@x>"),
        mail(2, 1, "b", message_id="<2@x>", references="<1@x>"),  # would close a loop
        mail(3, 2, "c", message_id="<2@x>"),  # a duplicate id
        mail(4, 3, "d"),  # no id at all
        mail(5, 4, "e", message_id="<5@x>", references="<5@x>"),  # refers to itself
    ]
    threads = thread_numbers("REFERENCES", [1, 2, 3, 4, 5], box)
    assert sorted(_numbers(threads)) == [1, 2, 3, 4, 5]
    assert ThreadData(threads).encode() == b"* THREAD (2 1)(3)(4)(5)\r\n"


def test_references_orders_siblings_by_sent_date_then_number() -> None:
    box = [
        mail(1, 0, message_id="<1@x>"),
        mail(2, 5, message_id="<2@x>", references="<1@x>"),
        mail(3, 2, message_id="<3@x>", references="<1@x>"),
        mail(4, 2, message_id="<4@x>", references="<1@x>"),
    ]
    assert wire("REFERENCES", box) == b"* THREAD (1 (3)(4)(2))\r\n"


def test_ordered_subject_groups_by_base_subject_and_date() -> None:
    box = [
        mail(1, 3, "Re: lunch"),
        mail(2, 1, "lunch"),
        mail(3, 0, "budget"),
        mail(4, 2, "[team] Lunch"),
        mail(5, 4, "Fwd: budget"),
        mail(6, 5, "solo"),
    ]
    assert wire("ORDEREDSUBJECT", box) == b"* THREAD (3 5)(2 (4)(1))(6)\r\n"
    assert wire("ORDEREDSUBJECT", box, [1, 6]) == b"* THREAD (1)(6)\r\n"
    assert wire("ORDEREDSUBJECT", []) == b"* THREAD\r\n"


def test_a_long_reply_chain_needs_no_recursion() -> None:
    count = 3000
    box = [mail(n, n, message_id=f"<{n}@x>", references=f"<{n - 1}@x>" if n > 1 else "")
           for n in range(1, count + 1)]
    threads = thread_numbers("REFERENCES", list(range(1, count + 1)), box)
    assert threads == [list(range(1, count + 1))]


def _numbers(threads: list[Thread] | Thread) -> list[int]:
    found: list[int] = []
    stack = list(threads)
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            found.append(item)
        else:
            stack.extend(item)
    return found


@settings(max_examples=150, deadline=None)
@given(mailboxes(max_size=10), st.sampled_from(["REFERENCES", "ORDEREDSUBJECT"]),
       st.data())
def test_threading_covers_every_message_exactly_once(
        box: list[MessageMeta], algorithm: str, data: st.DataObject) -> None:
    chosen = sorted(data.draw(st.sets(st.integers(1, len(box)))) if box else set())
    threads = thread_numbers(algorithm, chosen, box)
    assert sorted(_numbers(threads)) == chosen
    assert ThreadData(threads).encode().startswith(b"* THREAD")


@pytest.mark.parametrize("path", script_params("thread"))
def test_dovecot_thread_scripts(path: Path) -> None:
    check_script(path)

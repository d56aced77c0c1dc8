"""SEARCH evaluation: what a client finds with each key, ESEARCH results, body text."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poczta.imap import search as s
from poczta.imap.esearch import esearch_response, ordered_set, search_return
from poczta.imap.lexer import Scanner
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.search_eval import (
    SearchContext,
    evaluate,
    highest_modseq,
    needs_body,
    uids_of,
    uses_modseq,
)
from poczta.imap.search_text import body_text
from poczta.imap.sequence import parse_sequence_set
from poczta.store.base import MessageMeta
from tests.imap.imaptest_replay import check_script, script_params
from tests.imap.messages import BASE_DATE, mailboxes, message, raw_message
from tests.imap.strategies import search_keys

NOW = BASE_DATE + timedelta(days=1)
CONTEXT = SearchContext(NOW)


def criteria(text: str) -> s.AndKey:
    """The search program `text` as poczta's parser reads it."""
    scanner = Scanner([text.encode()], [], Dialect(utf8=True), ImapLimits())
    return s.parse_program(scanner, None)


def search(text: str, messages: list[MessageMeta], context: SearchContext = CONTEXT,
           bodies: list[str] | None = None) -> list[int]:
    body = (lambda number: bodies[number - 1]) if bodies is not None else None
    return evaluate(criteria(text), messages, context, body)


FLAGGED_BOX = [
    message(uid=3, flags=frozenset({"\\Seen", "\\Flagged"})),
    message(uid=7, flags=frozenset({"\\Answered", "$Work"})),
    message(uid=9, flags=frozenset({"\\Deleted", "\\Draft", "\\Seen"})),
]


@pytest.mark.parametrize(("program", "expected"), [
    ("ALL", [1, 2, 3]),
    ("SEEN", [1, 3]), ("UNSEEN", [2]),
    ("FLAGGED", [1]), ("UNFLAGGED", [2, 3]),
    ("ANSWERED", [2]), ("UNANSWERED", [1, 3]),
    ("DELETED", [3]), ("UNDELETED", [1, 2]),
    ("DRAFT", [3]), ("UNDRAFT", [1, 2]),
    ("KEYWORD $work", [2]), ("KEYWORD $WORK", [2]), ("UNKEYWORD $Work", [1, 3]),
    ("UNSEEN FLAGGED", []), ("SEEN NOT FLAGGED", [3]), ("OR FLAGGED ANSWERED", [1, 2]),
    ("(SEEN DELETED) UNFLAGGED", [3]), ("NOT (SEEN)", [2]),
    ("2:3", [2, 3]), ("*", [3]), ("3:*", [3]), ("1,3", [1, 3]), ("4:5", []),
    ("UID 7:*", [2, 3]), ("UID *", [3]), ("UID 1:3", [1]), ("UID 10:20", []),
])
def test_flag_and_set_keys(program: str, expected: list[int]) -> None:
    assert search(program, FLAGGED_BOX) == expected


def test_uid_search_gets_uids_of_the_matches() -> None:
    numbers = search("SEEN", FLAGGED_BOX)
    assert uids_of(numbers, FLAGGED_BOX) == [3, 9]


def test_recent_new_and_old_follow_the_sessions_recent_set() -> None:
    assert search("RECENT", FLAGGED_BOX) == []
    assert search("NEW", FLAGGED_BOX) == []
    assert search("OLD", FLAGGED_BOX) == [1, 2, 3]
    recent = SearchContext(NOW, recent_uids=frozenset({7, 9}))
    assert search("RECENT", FLAGGED_BOX, recent) == [2, 3]
    assert search("NEW", FLAGGED_BOX, recent) == [2]
    assert search("OLD", FLAGGED_BOX, recent) == [1]


def test_saved_result_dollar_matches_saved_uids_in_either_numbering() -> None:
    saved = SearchContext(NOW, saved_uids=frozenset({3, 9, 100}))
    assert search("$", FLAGGED_BOX, saved) == [1, 3]
    assert search("UID $ SEEN", FLAGGED_BOX, saved) == [1, 3]
    assert search("$", FLAGGED_BOX) == []


def test_internal_date_keys_use_the_date_in_its_own_zone() -> None:
    east = timezone(timedelta(hours=3))
    box = [
        message(uid=1, internal_date=datetime(2024, 5, 1, 23, 30, tzinfo=UTC)),
        # 2024-05-02 01:30 in its own zone, though still 1 May in UTC.
        message(uid=2, internal_date=datetime(2024, 5, 2, 1, 30, tzinfo=east)),
        message(uid=3, internal_date=datetime(2024, 5, 3, 0, 0, tzinfo=UTC)),
    ]
    assert search("ON 1-May-2024", box) == [1]
    assert search("ON 2-May-2024", box) == [2]
    assert search("BEFORE 2-May-2024", box) == [1]
    assert search("SINCE 2-May-2024", box) == [2, 3]
    assert search("SINCE 2-May-2024 BEFORE 3-May-2024", box) == [2]


def test_sent_date_keys_use_the_date_field_else_the_internal_date() -> None:
    box = [
        message(uid=1, date="Thu, 02 May 2024 00:30:00 +0200",
                internal_date=datetime(2024, 6, 1, tzinfo=UTC)),
        message(uid=2, internal_date=datetime(2024, 5, 2, 9, tzinfo=UTC)),
        message(uid=3, date="not a date", internal_date=datetime(2024, 5, 9, tzinfo=UTC)),
    ]
    assert search("SENTON 2-May-2024", box) == [1, 2]
    assert search("SENTBEFORE 3-May-2024", box) == [1, 2]
    assert search("SENTSINCE 3-May-2024", box) == [3]


def test_size_keys_compare_rfc822_size() -> None:
    box = [message("x" * n + "\r\n", uid=n) for n in (1, 50, 100)]
    middle = box[1].size
    assert search(f"LARGER {middle}", box) == [3]
    assert search(f"SMALLER {middle}", box) == [1]
    assert search(f"NOT LARGER {middle} NOT SMALLER {middle}", box) == [2]


def test_older_and_younger_are_complements_around_now() -> None:
    box = [message(uid=n, internal_date=NOW - timedelta(seconds=age))
           for n, age in ((1, 10), (2, 100), (3, 1000))]
    assert search("YOUNGER 100", box) == [1, 2]
    assert search("OLDER 100", box) == [3]
    assert search("OLDER 5", box) == [1, 2, 3]


def test_modseq_finds_changes_at_or_after_the_mod_sequence() -> None:
    box = [message(uid=n, modseq=m) for n, m in ((1, 5), (2, 9), (3, 12))]
    numbers = search("MODSEQ 9", box)
    assert numbers == [2, 3]
    assert highest_modseq(numbers, box) == 12
    assert search('MODSEQ "/flags/\\\\seen" all 10', box) == [3]
    assert uses_modseq(criteria("OR SEEN MODSEQ 3")) and not uses_modseq(criteria("SEEN"))


HEADER_BOX = [
    message(uid=1, subject="=?utf-8?q?Stra=C3=9Fe_und_Caf=C3=A9?=", **{"from": "Ann <ann@x.org>"},
            to="team: bob@y.org, Cara <cara@z.org>;"),
    message(uid=2, subject="Re: quarterly REPORT", **{"from": "dan@x.org (Daniel Boss)"},
            cc="eve@w.org", x_priority="1 (Highest)"),
    message(uid=3, **{"from": "=?iso-8859-2?q?Pawe=B3?= <pawel@example.pl>"}),
]


@pytest.mark.parametrize(("program", "expected"), [
    ("SUBJECT report", [2]), ("SUBJECT \"ly rep\"", [2]),
    ("SUBJECT strasse", [1]), ("SUBJECT STRASSE", [1]), ("SUBJECT \"café\"", [1]),
    ("SUBJECT \"cafe\u0301\"", [1]),  # a decomposed é finds the precomposed one
    ("FROM ann", [1]), ("FROM \"ann <ann@x\"", [1]), ("FROM x.org", [1, 2]),
    ("FROM \"daniel boss\"", [2]), ("FROM \"paweł\"", [3]), ("FROM \"PAWEŁ\"", [3]),
    ("TO team", [1]), ("TO cara", [1]), ("TO bob@y.org", [1]), ("CC eve", [2]), ("BCC a", []),
    ("HEADER X-Priority highest", [2]), ("HEADER x-priority \"\"", [2]),
    ("HEADER subject \"\"", [1, 2]), ("NOT HEADER Subject \"\"", [3]),
    ("HEADER to cara", [1]), ("HEADER x-missing \"\"", []),
])
def test_header_keys_match_decoded_substrings_case_insensitively(
        program: str, expected: list[int]) -> None:
    assert search(program, HEADER_BOX) == expected


def test_body_and_text_read_the_text_only_when_needed() -> None:
    box = [message(uid=1, subject="lunch"), message(uid=2, subject="news"),
           message(uid=3, subject="other")]
    bodies = ["Let us meet at noon", "Nothing about lunch", "NOON again"]
    asked: list[int] = []

    def body(number: int) -> str:
        asked.append(number)
        return bodies[number - 1]

    assert evaluate(criteria("BODY noon"), box, CONTEXT, body) == [1, 3]
    assert evaluate(criteria("TEXT lunch"), box, CONTEXT, body) == [1, 2]
    assert evaluate(criteria("BODY noon BODY meet"), box, CONTEXT, body) == [1]
    asked.clear()
    # The cheap key decides first: only message 2 needs its text.
    assert evaluate(criteria("BODY lunch SUBJECT news"), box, CONTEXT, body) == [2]
    assert asked == [2]
    assert needs_body(criteria("OR SEEN NOT TEXT x")) and not needs_body(criteria("SUBJECT x"))
    with pytest.raises(ValueError):
        evaluate(criteria("BODY x"), box, CONTEXT)


def test_body_text_decodes_mime_parts() -> None:
    html = "<p>Gr&uuml;&szlig;e aus <b>Krak\u00f3w</b></p>"
    raw = (
        "Subject: parts\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
        "preamble\r\n--b1\r\nContent-Type: text/plain; charset=iso-8859-2\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nZa=BF=F3=B3=E6 g=EA=B6l=B1 ja=BC=F1\r\n"
        "--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
        "--b2\r\nContent-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.encodebytes(html.encode()).decode()}\r\n--b2--\r\n"
        "--b1\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(b'secretword').decode()}\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner =?utf-8?q?t=C3=AAte?=\r\n\r\n"
        "inner body\r\n--b1--\r\nepilogue\r\n"
    ).encode("latin-1")
    text = body_text(raw)
    assert "Zażółć gęślą jaźń" in text
    assert "Grüße aus" in text and "Kraków" in text and "<b>" not in text
    assert "secretword" not in text and "preamble" not in text and "epilogue" not in text
    assert "inner tête" in text and "inner body" in text


def test_body_text_of_a_plain_message_and_its_limit() -> None:
    raw = raw_message("caf\u00e9 " * 100, subject="s")
    assert body_text(raw).startswith("café café")
    assert len(body_text(raw, limit=12)) == 12
    assert body_text(b"no header end at all") == ""


@given(st.binary(max_size=400), st.sampled_from([b"", b"Content-Type: multipart/mixed; "
                                                 b"boundary=x\r\n\r\n--x\r\n"]))
def test_body_text_never_raises(garbage: bytes, prefix: bytes) -> None:
    assert isinstance(body_text(prefix + garbage), str)


def test_esearch_results() -> None:
    assert search_return([2, 3, 4, 9], ()) == search_return([2, 3, 4, 9], ("ALL",))
    result = search_return([2, 3, 4, 9], ("MIN", "MAX", "COUNT", "ALL"))
    assert (result.minimum, result.maximum, result.count, result.all) == (2, 9, 4, "2:4,9")
    response = esearch_response("a1", result, uid=True)
    assert response is not None
    assert response.encode() == b'* ESEARCH (TAG "a1") UID MIN 2 MAX 9 COUNT 4 ALL 2:4,9\r\n'
    empty = esearch_response("a2", search_return([], ("MIN", "MAX", "COUNT")), uid=False)
    assert empty is not None
    assert empty.encode() == b'* ESEARCH (TAG "a2") COUNT 0\r\n'


def test_save_keeps_all_matches_or_just_min_and_max() -> None:
    only_save = search_return([4, 5, 8], ("SAVE",))
    assert only_save.saved == (4, 5, 8)
    assert esearch_response("t", only_save, uid=False) is None
    assert search_return([4, 5, 8], ("SAVE", "MIN")).saved == (4,)
    assert search_return([4, 5, 8], ("SAVE", "MIN", "MAX")).saved == (4, 8)
    assert search_return([4, 5, 8], ("SAVE", "MIN", "COUNT")).saved == (4, 5, 8)
    assert search_return([], ("SAVE", "MAX")).saved == ()


def test_ordered_set_keeps_sort_order() -> None:
    assert ordered_set([5, 3, 4, 2, 1]) == "5,3:4,2,1"
    assert ordered_set([1, 2, 3]) == "1:3"
    assert ordered_set([]) == ""


# --------------------------------------------------------------------------- properties

_now = st.just(NOW)


@settings(max_examples=150, deadline=None)
@given(search_keys, mailboxes(), st.frozensets(st.integers(1, 50)))
def test_not_is_the_complement_and_evaluation_never_raises(
        key: s.SearchKey, box: list[MessageMeta], saved: frozenset[int]) -> None:
    context = SearchContext(NOW, saved_uids=saved, recent_uids=frozenset({1, 2, 3}))
    bodies = [f"body of {number}" for number in range(1, len(box) + 1)]

    def body(number: int) -> str:
        return bodies[number - 1]

    matched = evaluate(key, box, context, body)
    assert matched == sorted(set(matched))
    assert all(1 <= number <= len(box) for number in matched)
    rest = evaluate(s.NotKey(key), box, context, body)
    assert sorted(matched + rest) == list(range(1, len(box) + 1))


@settings(max_examples=100, deadline=None)
@given(search_keys, search_keys, mailboxes())
def test_or_is_the_union_and_and_the_intersection(
        left: s.SearchKey, right: s.SearchKey, box: list[MessageMeta]) -> None:
    def body(number: int) -> str:
        return "text"

    first = set(evaluate(left, box, CONTEXT, body))
    second = set(evaluate(right, box, CONTEXT, body))
    assert set(evaluate(s.OrKey(left, right), box, CONTEXT, body)) == first | second
    assert set(evaluate(s.AndKey((left, right)), box, CONTEXT, body)) == first & second


def test_a_sequence_set_beyond_the_mailbox_matches_nothing() -> None:
    assert evaluate(s.AndKey((s.SetKey(parse_sequence_set("1000"), uid=False),)),
                    FLAGGED_BOX, CONTEXT) == []
    assert evaluate(s.AndKey((s.SetKey(parse_sequence_set("*"), uid=True),)), [], CONTEXT) == []


def test_a_naive_internal_date_is_taken_as_utc() -> None:
    box = [message(uid=1, internal_date=datetime(2024, 5, 1, 12, 0))]
    assert search("YOUNGER 100000", box, SearchContext(datetime(2024, 5, 1, 13, 0))) == [1]
    assert search("ON 1-May-2024", box) == [1]
    assert date(2024, 5, 1) == box[0].internal_date.date()
    assert SearchContext(datetime(2024, 5, 1, tzinfo=UTC)).now.tzinfo is UTC


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("path", script_params("search-", "esearch"))
def test_dovecot_search_scripts(path: Path) -> None:
    check_script(path)


_flag_keys = st.recursive(
    st.one_of(
        st.sampled_from(sorted(s.FLAG_KEYS)).map(s.FlagKey),
        st.builds(s.KeywordKey, st.sampled_from(["$Junk", "work", "WORK", "other"]), st.booleans()),
    ),
    lambda inner: st.one_of(
        st.builds(s.NotKey, inner),
        st.builds(s.OrKey, inner, inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda keys: s.AndKey(tuple(keys))),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(_flag_keys, mailboxes(max_size=12))
def test_a_search_of_flags_answers_for_each_message_what_that_message_alone_gets(
        key: s.SearchKey, box: list[MessageMeta]) -> None:
    context = SearchContext(NOW, recent_uids=frozenset({1, 2, 3}))
    alone = [n for n, meta in enumerate(box, 1) if evaluate(key, [meta], context) == [1]]
    assert evaluate(key, box, context) == alone

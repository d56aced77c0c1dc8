"""Responses as a client reads them off the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poczta.imap import SequenceSet
from poczta.imap import encoder as e
from poczta.imap.fetch import BodySection


def test_tagged_and_untagged_status_with_codes() -> None:
    assert e.Tagged("a1", "OK", "SELECT completed", "READ-WRITE").encode() == (
        b"a1 OK [READ-WRITE] SELECT completed\r\n"
    )
    assert e.Untagged("OK", "UIDs valid", e.Code.number("UIDVALIDITY", 3857529045)).encode() == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert e.Tagged(
        "A003", "OK", "APPEND completed", e.Code.append_uid(38505, "3955")
    ).encode() == (b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n")
    copy = e.Code.copy_uid(38505, SequenceSet.of([304, 319, 320]), "3956:3958")
    assert e.Tagged("A004", "OK", "Done", copy).encode() == (
        b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
    )
    flags = e.Code.permanent_flags(["\\Deleted", "\\Seen", "\\*"])
    assert e.Untagged("OK", "Limited", flags).encode() == (
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
    )
    assert e.Tagged("a", "NO", "no such mailbox", "TRYCREATE").encode() == (
        b"a NO [TRYCREATE] no such mailbox\r\n"
    )
    assert e.bye("Logging out").encode() == b"* BYE Logging out\r\n"
    assert e.Untagged("PREAUTH", "hi", e.Code.capability(["IMAP4rev2"])).encode() == (
        b"* PREAUTH [CAPABILITY IMAP4rev2] hi\r\n"
    )


@pytest.mark.parametrize(
    "code",
    [
        "ALERT",
        "AUTHENTICATIONFAILED",
        "NONEXISTENT",
        "ALREADYEXISTS",
        "CANNOT",
        "LIMIT",
        "SERVERBUG",
        "CONTACTADMIN",
        "PRIVACYBUG",
        "EXPUNGEISSUED",
        "INUSE",
        "OVERQUOTA",
        "UNAVAILABLE",
        "CLOSED",
        "NOMODSEQ",
        "TOOBIG",
        "READ-ONLY",
    ],
)
def test_plain_response_codes(code: str) -> None:
    assert e.Tagged("x", "NO", "text", code).encode() == f"x NO [{code}] text\r\n".encode()


def test_response_text_cannot_break_the_line() -> None:
    assert e.Tagged("a", "BAD", "one\r\ntwo\x00").encode() == b"a BAD one two \r\n"
    assert e.Tagged("a", "NO", "caf\u00e9").encode() == b"a NO caf?\r\n"
    assert e.Tagged("a", "NO", "caf\u00e9").encode(utf8=True) == "a NO café\r\n".encode()
    with pytest.raises(ValueError):
        e.Tagged("a", "MAYBE", "x").encode()


def test_continuations() -> None:
    assert e.Continuation("Ready").encode() == b"+ Ready\r\n"
    assert e.Continuation().encode() == b"+ \r\n"
    assert e.Continuation.challenge(b"\x00abc").encode() == b"+ AGFiYw==\r\n"


def test_strings_are_quoted_when_safe_else_literal() -> None:
    assert e.encode_value("plain") == b'"plain"'
    assert e.encode_value('say "hi" \\') == b'"say \\"hi\\" \\\\"'
    assert e.encode_value("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert e.encode_value("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"
    assert e.encode_value("caf\u00e9", utf8=True) == '"café"'.encode()
    assert e.encode_value(b"\xff\xfe", utf8=True) == b"{2}\r\n\xff\xfe"
    assert e.encode_value("x" * 2000).startswith(b"{2000}\r\n")
    assert e.encode_value(None) == b"NIL"
    assert e.encode_value([1, None, e.Atom("\\Seen"), ["a", b"b"]]) == b'(1 NIL \\Seen ("a" "b"))'
    assert e.encode_value(e.Binary(b"a\x00b")) == b"~{3}\r\na\x00b"
    assert e.encode_value(e.Binary(b"ab")) == b"{2}\r\nab"
    assert e.encode_value(e.Octets(b"hi")) == b"{2}\r\nhi"
    assert e.encode_value(b"hi") == b'"hi"'


def test_mailbox_names_follow_the_dialect() -> None:
    line = e.list_data(["\\HasNoChildren"], "/", "Entwürfe/été")
    assert line.encode() == b'* LIST (\\HasNoChildren) "/" "Entw&APw-rfe/&AOk-t&AOk-"\r\n'
    assert line.encode(utf8=True) == '* LIST (\\HasNoChildren) "/" "Entwürfe/été"\r\n'.encode()
    assert e.list_data([], None, "Tom&Jerry").encode() == b'* LIST () NIL "Tom&-Jerry"\r\n'
    assert e.list_data(["\\Subscribed"], ".", "x", lsub=True).encode() == (
        b'* LSUB (\\Subscribed) "." "x"\r\n'
    )


def test_list_extended_data() -> None:
    assert e.list_data([], "/", "Foo", childinfo=["SUBSCRIBED"]).encode() == (
        b'* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert e.list_data([], "/", "New", oldname="Old").encode() == (
        b'* LIST () "/" "New" ("OLDNAME" ("Old"))\r\n'
    )


def test_untagged_data_lines() -> None:
    assert e.exists(23).encode() == b"* 23 EXISTS\r\n"
    assert e.recent(5).encode() == b"* 5 RECENT\r\n"
    assert e.expunge(3).encode() == b"* 3 EXPUNGE\r\n"
    assert e.flags(["\\Answered", "\\Seen", "$Forwarded"]).encode() == (
        b"* FLAGS (\\Answered \\Seen $Forwarded)\r\n"
    )
    assert e.capability(["IMAP4rev2", "IDLE"]).encode() == b"* CAPABILITY IMAP4rev2 IDLE\r\n"
    assert e.enabled(["CONDSTORE"]).encode() == b"* ENABLED CONDSTORE\r\n"
    assert e.enabled([]).encode() == b"* ENABLED\r\n"
    assert e.id_data([("name", "poczta"), ("os", None)]).encode() == (
        b'* ID ("name" "poczta" "os" NIL)\r\n'
    )
    assert e.id_data(None).encode() == b"* ID NIL\r\n"
    assert e.status_data("blurdybloop", [("MESSAGES", 231), ("UIDNEXT", 44292)]).encode() == (
        b'* STATUS "blurdybloop" (MESSAGES 231 UIDNEXT 44292)\r\n'
    )
    assert e.search_data([2, 84, 882]).encode() == b"* SEARCH 2 84 882\r\n"
    assert e.search_data([], modseq=None).encode() == b"* SEARCH\r\n"
    assert (
        e.search_data([2, 5], modseq=917162500).encode() == b"* SEARCH 2 5 (MODSEQ 917162500)\r\n"
    )
    assert e.sort_data([2, 3, 6]).encode() == b"* SORT 2 3 6\r\n"
    assert e.namespace_data([("", "/")], None, [("Shared/", "/")]).encode() == (
        b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))\r\n'
    )
    assert e.quota_data("", [("STORAGE", 10, 512)]).encode() == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert e.quota_root_data("INBOX", [""]).encode() == b'* QUOTAROOT "INBOX" ""\r\n'
    assert e.quota_root_data("INBOX", []).encode() == b'* QUOTAROOT "INBOX"\r\n'
    both = e.quota_data("", [("STORAGE", 3, 500), ("MESSAGE", 7, 10)]).encode()
    assert both == b'* QUOTA "" (STORAGE 3 500 MESSAGE 7 10)\r\n'
    assert (
        e.vanished("300:310,405", earlier=True).encode() == b"* VANISHED (EARLIER) 300:310,405\r\n"
    )
    assert e.vanished(SequenceSet.of([5])).encode() == b"* VANISHED 5\r\n"


def test_esearch() -> None:
    line = e.esearch_data("A282", uid=True, minimum=2, count=3, all=SequenceSet.of([2, 3, 4]))
    assert line.encode() == b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3 ALL 2:4\r\n'
    assert e.esearch_data("a", uid=False, count=0).encode() == b'* ESEARCH (TAG "a") COUNT 0\r\n'
    assert e.esearch_data(None, uid=False, all="", modseq=9).encode() == b"* ESEARCH MODSEQ 9\r\n"


def test_thread() -> None:
    threads: list[e.Thread] = [[2], [3, 6, [4, 23], [44, 7, 96]]]
    assert e.ThreadData(threads).encode() == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert e.ThreadData([[[3], [5]]]).encode() == b"* THREAD ((3)(5))\r\n"
    assert e.ThreadData([]).encode() == b"* THREAD\r\n"


def test_fetch_items() -> None:
    moment = datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7)))
    section = BodySection(peek=True, text="HEADER.FIELDS", fields=("From", "X(y"), partial=(0, 9))
    line = e.FetchData(
        12,
        [
            ("FLAGS", e.flag_atoms(["\\Seen"])),
            ("UID", 4827313),
            ("MODSEQ", [12121231000]),
            ("INTERNALDATE", e.date_time(moment)),
            ("RFC822.SIZE", 44827),
            (section.response_name(), e.Octets(b"From: a\r\n\r\n")),
            ("RFC822.TEXT", e.Octets(b"")),
            ("BINARY[1]", e.Binary(b"\x00\x01")),
        ],
    )
    assert line.encode() == (
        b"* 12 FETCH (FLAGS (\\Seen) UID 4827313 MODSEQ (12121231000) "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 44827 '
        b'BODY[HEADER.FIELDS (From "X(y")]<0> {11}\r\nFrom: a\r\n\r\n RFC822.TEXT {0}\r\n '
        b"BINARY[1] ~{2}\r\n\x00\x01)\r\n"
    )


def test_envelope_as_a_nested_value() -> None:
    envelope = [
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "IMAP4rev2 WG mtg summary and minutes",
        [["Terry Gray", None, "gray", "cac.washington.edu"]],
        None,
    ]
    assert e.encode_value(envelope) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) NIL)'
    )


def test_date_time_forms() -> None:
    assert e.date_time(datetime(2024, 3, 5, 9, 8, 7, tzinfo=UTC)) == "05-Mar-2024 09:08:07 +0000"
    assert e.date_time(datetime(2024, 12, 31, 23, 59, 59)) == "31-Dec-2024 23:59:59 +0000"
    east = timezone(timedelta(hours=5, minutes=30))
    assert e.date_time(datetime(2000, 1, 1, tzinfo=east)) == "01-Jan-2000 00:00:00 +0530"
    west = timezone(-timedelta(minutes=30))
    assert e.date_time(datetime(5, 6, 7, 8, 9, 10, tzinfo=west)) == "07-Jun-0005 08:09:10 -0030"


@given(
    st.datetimes(timezones=st.one_of(st.none(), st.builds(
        timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m))))),
)
def test_date_time_is_day_month_year_time_and_zone(moment: datetime) -> None:
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    offset = moment.utcoffset() or timedelta()
    minutes = int(offset.total_seconds()) // 60
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    assert e.date_time(moment) == (
        f"{moment.day:02d}-{months[moment.month - 1]}-{moment.year:04d}"
        f" {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {zone}"
    )

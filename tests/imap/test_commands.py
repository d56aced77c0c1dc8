"""Command lines → the typed commands a session receives, or the BAD it must send.

Each table row is what a client writes and what the parser makes of it; many rows
are the examples of RFC 9051 section 6 and of the extensions' RFCs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from poczta.imap import CommandError, Dialect, SequenceSet
from poczta.imap import commands as c
from poczta.imap.fetch import BinarySize, BodySection, FetchItem
from poczta.imap.search import AndKey, DateKey, FlagKey, TextKey
from poczta.imap.sequence import STAR
from tests.imap.harness import parse_one


def seq(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


ALL = AndKey((FlagKey("ALL"),))

SESSION = [
    (b"a1 CAPABILITY", c.Capability("a1")),
    (b"a2 noop", c.Noop("a2")),
    (b"A023 LOGOUT", c.Logout("A023")),
    (b"a002 STARTTLS", c.StartTls("a002")),
    (b"a LOGIN SMITH SESAME", c.Login("a", "SMITH", "SESAME")),
    (b'a LOGIN "fred foobar" "pass\\"wo\\\\rd"', c.Login("a", "fred foobar", 'pass"wo\\rd')),
    (b"a LOGIN {5+}\r\nalice {4+}\r\np w.", c.Login("a", "alice", "p w.")),
    (b"a AUTHENTICATE PLAIN", c.Authenticate("a", "PLAIN")),
    (b"a AUTHENTICATE plain =", c.Authenticate("a", "PLAIN", b"")),
    (
        b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==",
        c.Authenticate("a", "PLAIN", b"AGFsaWNlAHNlY3JldA=="),
    ),
    (b"t2 ENABLE CONDSTORE qresync", c.Enable("t2", ("CONDSTORE", "QRESYNC"))),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("name" "sodr" "version" NIL)', c.Id("a", (("name", "sodr"), ("version", None)))),
    (b"A001 NAMESPACE", c.Namespace("A001")),
    (b"a IDLE", c.Idle("a")),
    (b"a COMPRESS DEFLATE", c.Compress("a", "DEFLATE")),
    (b"a GETQUOTAROOT inbox", c.GetQuotaRoot("a", "INBOX")),
    (b'a GETQUOTA ""', c.GetQuota("a", "")),
    (b'a SETQUOTA "" (STORAGE 512)', c.SetQuota("a", "", (("STORAGE", 512),))),
    (b"a SETQUOTA x (storage 1 MESSAGE 2)", c.SetQuota("a", "x", (("STORAGE", 1), ("MESSAGE", 2)))),
    (b'a SETQUOTA "" ()', c.SetQuota("a", "", ())),
]

MAILBOXES = [
    (b"A142 SELECT INBOX", c.Select("A142", "INBOX")),
    (b"A932 EXAMINE blurdybloop", c.Select("A932", "blurdybloop", read_only=True)),
    (b"a SELECT inbox (CONDSTORE)", c.Select("a", "INBOX", condstore=True)),
    (
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))",
        c.Select(
            "A02",
            "INBOX",
            qresync=c.Qresync(67890007, 20050715194045000, seq((41, 41), (43, 211), (214, 541))),
        ),
    ),
    (
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500 25000,37500)))",
        c.Select(
            "B04",
            "INBOX",
            qresync=c.Qresync(
                67890007,
                90060115194045000,
                seq((1, 29997)),
                (seq((5000, 5000), (7500, 7500)), seq((25000, 25000), (37500, 37500))),
            ),
        ),
    ),
    (b"A003 CREATE owatagusiam/", c.Create("A003", "owatagusiam/")),
    (
        b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))",
        c.Create("t1", "MySpecial", ("\\Drafts", "\\Sent")),
    ),
    (b"A683 DELETE blurdybloop", c.Delete("A683", "blurdybloop")),
    (b"A683 RENAME blurdybloop sarasoop", c.Rename("A683", "blurdybloop", "sarasoop")),
    (b"A002 SUBSCRIBE #news.comp.mail.mime", c.Subscribe("A002", "#news.comp.mail.mime")),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime", c.Unsubscribe("A002", "#news.comp.mail.mime")),
    (b'A101 LIST "" ""', c.List("A101", "", ("",))),
    (b'A102 LIST #news.comp.mail.misc ""', c.List("A102", "#news.comp.mail.misc", ("",))),
    (b"A202 LIST ~/Mail/ %", c.List("A202", "~/Mail/", ("%",))),
    (b'a LIST "" INBOX/*', c.List("a", "", ("INBOX/*",))),
    (
        b'A04 LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)',
        c.List("A04", "", ("%",), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN",)),
    ),
    (
        b'A05 LIST "" ("INBOX" "Drafts" %) RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))',
        c.List("A05", "", ("INBOX", "Drafts", "%"), (), ("SPECIAL-USE",), ("MESSAGES", "UNSEEN")),
    ),
    (b'a LIST "" % RETURN ()', c.List("a", "", ("%",))),
    (b'A002 LSUB "#news." "comp.mail.*"', c.Lsub("A002", "#news.", "comp.mail.*")),
    (
        b"A042 STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ SIZE DELETED APPENDLIMIT)",
        c.Status(
            "A042",
            "blurdybloop",
            ("UIDNEXT", "MESSAGES", "HIGHESTMODSEQ", "SIZE", "DELETED", "APPENDLIMIT"),
        ),
    ),
    (
        b"a STATUS Trash (DELETED DELETED-STORAGE)",
        c.Status("a", "Trash", ("DELETED", "DELETED-STORAGE")),
    ),
    (
        b'a LIST "" % RETURN (STATUS (DELETED-STORAGE))',
        c.List("a", "", ("%",), (), (), ("DELETED-STORAGE",)),
    ),
    (b"a SELECT &AOk-t&AOk-", c.Select("a", "été")),
    (b"a SELECT &AMk-t&AOk-", c.Select("a", "Été")),
    (b"a SELECT ~peter/mail/&U,BTFw-/&ZeVnLIqe-", c.Select("a", "~peter/mail/台北/日本語")),
    (b"a SELECT Entw&APw-rfe", c.Select("a", "Entwürfe")),
    (b"a CREATE Tom&-Jerry", c.Create("a", "Tom&Jerry")),
]

UTF8_MAILBOXES = [
    ('a SELECT "Entwürfe"'.encode(), c.Select("a", "Entwürfe")),
    (b"a SELECT Tom&Jerry", c.Select("a", "Tom&Jerry")),
    (b'a LIST "" "Brouillons/%"', c.List("a", "", ("Brouillons/%",))),
]

ZONE = timezone(-timedelta(hours=7))
APPENDS = [
    (
        b'A003 APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {5+}\r\nhello',
        c.Append(
            "A003",
            "saved-messages",
            (c.AppendMessage(("\\Seen",), datetime(1996, 7, 17, 2, 44, 25, tzinfo=ZONE), 5),),
        ),
    ),
    (b"a APPEND INBOX {0+}\r\n", c.Append("a", "INBOX", (c.AppendMessage(size=0),))),
    (
        b"a APPEND INBOX ~{3+}\r\na\x00b () {2+}\r\nhi",
        c.Append("a", "INBOX", (c.AppendMessage(size=3, binary=True), c.AppendMessage(size=2))),
    ),
    (
        b'a APPEND {5+}\r\nDraft " 1-Jan-2024 00:00:00 +0000" {1}\r\nx',
        c.Append("a", "Draft", (c.AppendMessage((), datetime(2024, 1, 1, tzinfo=UTC), 1),)),
    ),
]

MESSAGES = [
    (b"A202 EXPUNGE", c.Expunge("A202")),
    (b"A003 UID EXPUNGE 3000:3002", c.Expunge("A003", seq((3000, 3002)))),
    (b"a CHECK", c.Check("a")),
    (b"A341 CLOSE", c.Close("A341")),
    (b"a UNSELECT", c.Unselect("a")),
    (
        b"A003 STORE 2:4 +FLAGS (\\Deleted)",
        c.Store("A003", False, seq((2, 4)), c.StoreMode.ADD, ("\\Deleted",)),
    ),
    (
        b"a UID STORE 1 -flags.silent \\seen \\FLAGGED $Junk",
        c.Store("a", True, seq((1, 1)), c.StoreMode.REMOVE, ("\\Seen", "\\Flagged", "$Junk"), True),
    ),
    (b"a STORE 1:* FLAGS ()", c.Store("a", False, seq((1, STAR)), c.StoreMode.REPLACE, ())),
    (
        b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)",
        c.Store(
            "d105",
            False,
            seq((7, 7), (5, 5), (9, 9)),
            c.StoreMode.ADD,
            ("\\Deleted",),
            True,
            320162338,
        ),
    ),
    (b"A003 COPY 2:4 MEETING", c.Copy("A003", False, seq((2, 4)), "MEETING")),
    (b"a UID COPY $ Archive", c.Copy("a", True, SequenceSet(saved=True), "Archive")),
    (b"a MOVE 4:2 Trash", c.Move("a", False, seq((4, 2)), "Trash")),
    (b"a UID MOVE 42:69 foo", c.Move("a", True, seq((42, 69)), "foo")),
]

FETCHES = [
    (
        b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])",
        c.Fetch(
            "A654",
            False,
            seq((2, 4)),
            (FetchItem("FLAGS"), BodySection(text="HEADER.FIELDS", fields=("DATE", "FROM"))),
        ),
    ),
    (
        b"a FETCH 1 ALL",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
        ),
    ),
    (
        b"a FETCH 1 fast",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
        ),
    ),
    (
        b"a FETCH 1 FULL",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(
                FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
            ),
        ),
    ),
    (b"a FETCH * body[]", c.Fetch("a", False, seq((STAR, STAR)), (BodySection(),))),
    (
        b"a UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER])",
        c.Fetch(
            "a",
            True,
            seq((1, STAR)),
            (
                FetchItem("UID"),
                FetchItem("RFC822.SIZE"),
                FetchItem("FLAGS"),
                BodySection(peek=True, text="HEADER"),
            ),
        ),
    ),
    (
        b"a FETCH 3 (BODY[1.2.MIME] BODY[4.TEXT]<0.2048> BODY[3] BODY[2.HEADER.FIELDS.NOT (X-A)])",
        c.Fetch(
            "a",
            False,
            seq((3, 3)),
            (
                BodySection(part=(1, 2), text="MIME"),
                BodySection(part=(4,), text="TEXT", partial=(0, 2048)),
                BodySection(part=(3,)),
                BodySection(part=(2,), text="HEADER.FIELDS.NOT", fields=("X-A",)),
            ),
        ),
    ),
    (
        b"a FETCH 1 (BINARY[1] BINARY.PEEK[]<10.20> BINARY.SIZE[2.1] BINARY.SIZE[])",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            (
                BodySection(binary=True, part=(1,)),
                BodySection(True, True, partial=(10, 20)),
                BinarySize((2, 1)),
                BinarySize(),
            ),
        ),
    ),
    (
        b"a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT BODYSTRUCTURE ENVELOPE MODSEQ INTERNALDATE)",
        c.Fetch(
            "a",
            False,
            seq((1, 1)),
            tuple(
                FetchItem(n)
                for n in (
                    "RFC822",
                    "RFC822.HEADER",
                    "RFC822.TEXT",
                    "BODYSTRUCTURE",
                    "ENVELOPE",
                    "MODSEQ",
                    "INTERNALDATE",
                )
            ),
        ),
    ),
    (
        b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
        c.Fetch("s100", True, seq((1, STAR)), (FetchItem("FLAGS"),), 12345),
    ),
    (
        b"A03 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)",
        c.Fetch("A03", True, seq((300, 500)), (FetchItem("FLAGS"),), 12345, True),
    ),
]

ORDERING = [
    (
        b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994",
        c.Sort(
            "A282",
            False,
            (c.SortKey("SUBJECT"),),
            "UTF-8",
            AndKey((DateKey("SINCE", date(1994, 2, 1)),)),
        ),
    ),
    (
        b"A283 UID SORT (REVERSE DATE size) us-ascii ALL",
        c.Sort("A283", True, (c.SortKey("DATE", True), c.SortKey("SIZE")), "US-ASCII", ALL),
    ),
    (
        b"A01 SORT RETURN (MIN COUNT) (ARRIVAL) UTF-8 ALL",
        c.Sort("A01", False, (c.SortKey("ARRIVAL"),), "UTF-8", ALL, ("MIN", "COUNT")),
    ),
    (
        b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000",
        c.Thread(
            "A283", False, "ORDEREDSUBJECT", "UTF-8", AndKey((DateKey("SINCE", date(2000, 3, 5)),))
        ),
    ),
    (
        b'A284 UID THREAD REFERENCES US-ASCII TEXT "gewp"',
        c.Thread("A284", True, "REFERENCES", "US-ASCII", AndKey((TextKey("TEXT", "gewp"),))),
    ),
]

TABLE = SESSION + MAILBOXES + APPENDS + MESSAGES + FETCHES + ORDERING


@pytest.mark.parametrize(
    ("wire", "expected"), TABLE, ids=[row[0][:40].decode("latin-1") for row in TABLE]
)
def test_command_parses(wire: bytes, expected: c.Command) -> None:
    assert parse_one(wire) == expected


@pytest.mark.parametrize(("wire", "expected"), UTF8_MAILBOXES)
def test_utf8_mailbox_names(wire: bytes, expected: c.Command) -> None:
    assert parse_one(wire, dialect=Dialect(utf8=True)) == expected


BAD = [
    (b"a FOO", "unknown command"),
    (b"a UID NOOP", "unknown command"),
    (b"a NOOP now", "this command takes no arguments"),
    (b"+ NOOP", None),
    (b"a", "expected a space, found end of command"),
    (b"a  NOOP", "expected a command name"),
    (b"a LOGIN alice", "expected a space, found end of command"),
    (b'a LOGIN "alice secret', "invalid quoted string"),
    (b'a LOGIN "al\\ice" x', "invalid quoted string"),
    (b'a LOGIN "caf\xc3\xa9" x', "8-bit octet in a quoted string"),
    (b"a SELECT INBOX (FOO)", "unknown select parameter FOO"),
    (b"a STATUS INBOX ()", "STATUS needs at least one item"),
    (b"a STATUS INBOX (MESSAGES BOGUS)", "unknown STATUS item BOGUS"),
    (b"a STATUS INBOX (DELETED-STORAGES)", "unknown STATUS item DELETED-STORAGES"),
    (b"a FETCH 1 (FLAGS BOGUS)", "unknown FETCH item BOGUS"),
    (b"a FETCH 0 FLAGS", "invalid number '0' in sequence set"),
    (b"a FETCH 4294967296 FLAGS", "number in sequence set exceeds 4294967295"),
    (b"a FETCH 1 BODY[MIME]", "invalid section MIME"),
    (b"a FETCH 1 BODY[1.FOO]", "invalid section FOO"),
    (b"a FETCH 1 BODY[]<0.0>", "a partial length must not be zero"),
    (b"a FETCH 1 (FLAGS) (VANISHED)", "VANISHED needs UID FETCH with CHANGEDSINCE"),
    (b"a STORE 1 FLAGS (\\Recent)", "\\Recent cannot be set by a client"),
    (b"a STORE 1 LABELS (x)", "unknown STORE item LABELS"),
    (b"a SEARCH", "expected a space, found end of command"),
    (b"a SEARCH FROM", "expected a space, found end of command"),
    (b"a SEARCH BOGUS", "unknown search key BOGUS"),
    (b"a SEARCH SINCE 30-Feb-2020", "no such date"),
    (b"a SEARCH SINCE 1-Foo-2020", "unknown month name"),
    (b"a SEARCH RETURN (FIRST) ALL", "unknown search return option FIRST"),
    (b"a SEARCH (SEEN", "expected a space, found end of command"),
    (b"a SORT (FOO) UTF-8 ALL", "unknown sort key FOO"),
    (b"a THREAD FOO UTF-8 ALL", "unknown threading algorithm FOO"),
    (b"a APPEND INBOX", "expected a space, found end of command"),
    (
        b'a APPEND INBOX "1-Jan-2020" {1+}\r\nx',
        'expected a date-time like "17-Jul-1996 02:44:25 -0700"',
    ),
    (b"a LOGIN ~{1+}\r\nx y", "literal8 is only allowed for APPEND message data"),
    (b"a ENABLE", "ENABLE needs at least one capability"),
    (b"a AUTHENTICATE PLAIN ***", "initial response is not base64"),
    (b'a LIST "" % RETURN (BOGUS)', "unknown LIST return option BOGUS"),
    (b"a UID EXPUNGE", "expected a space, found end of command"),
    (b"a NOOP\x00", "this command takes no arguments"),
    (b'a SETQUOTA "" STORAGE 1', "expected a list of quota limits"),
    (b'a SETQUOTA "" (STORAGE)', "expected a space, found unexpected character"),
    (b'a SETQUOTA "" (STORAGE 1', "expected a space, found end of command"),
]


@pytest.mark.parametrize(
    ("wire", "reason"), BAD, ids=[row[0][:40].decode("latin-1") for row in BAD]
)
def test_malformed_command_is_bad_with_reason(wire: bytes, reason: str | None) -> None:
    event = parse_one(wire)
    assert isinstance(event, CommandError)
    assert event.status == "BAD"
    assert not event.fatal
    if reason is not None:
        assert event.reason == reason
        assert event.tag == "a"
    else:
        assert event.tag is None


def test_unsupported_charset_is_no_badcharset() -> None:
    event = parse_one(b"a SEARCH CHARSET KOI8-X TEXT x")
    assert event == CommandError(
        "a",
        "charset not supported",
        "NO",
        "BADCHARSET (US-ASCII UTF-8 ISO-8859-1 ISO-8859-2 ISO-8859-15 WINDOWS-1252)",
    )
    assert event.response().encode().startswith(b"a NO [BADCHARSET (US-ASCII UTF-8 ")


def test_bad_without_tag_is_untagged() -> None:
    event = parse_one(b"\x01\x02 junk")
    assert isinstance(event, CommandError)
    assert event.response().encode() == b"* BAD expected a tag\r\n"


def test_an_ascii_name_that_is_not_modified_utf7_is_taken_as_written() -> None:
    # Dovecot does the same; the mailbox then simply does not exist.
    assert parse_one(b"a SELECT &Jjo") == c.Select("a", "&Jjo")
    error = parse_one(b"a SELECT \"&Jj\xc3\xa9\"")
    assert isinstance(error, CommandError)  # 8-bit octets are still refused

"""What a CONDSTORE client is told of other sessions' flag changes around a FETCH
(CHANGEDSINCE): each changed message once, with its FLAGS and MODSEQ, whether in the
answer or, for those the answer does not carry, as news before it; nothing it was
told is lost, and a change made after the command's look at the mailbox comes next."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from poczta.imap.session.core import ImapSession
from poczta.imap.view import Change, SelectedView
from poczta.store.base import SYSTEM_FLAGS, FlagMode, MailboxChange, MailboxId
from poczta.store.records import FlagResult
from tests.imap.session_harness import RecordingConnection, logged_in_session


class _Store:
    """One mailbox of messages 1..count; `commit` is another session's flag change,
    `after_read` one committed just after the session next reads the changes."""

    def __init__(self, count: int) -> None:
        self.messages: dict[int, tuple[frozenset[str], int]] = {
            uid: (frozenset(), uid) for uid in range(1, count + 1)
        }
        self.highest = count
        self.after_read: list[tuple[int, frozenset[str]]] = []
        self.after_store: list[tuple[int, frozenset[str]]] = []  # committed right after a STORE
        self.before_store: list[tuple[int, frozenset[str]]] = []  # just before its write
        self.store_reads = 0

    def commit(self, uid: int, *flags: str) -> int:
        self.highest += 1
        self.messages[uid] = (frozenset(flags), self.highest)
        return self.highest

    async def mailbox_version(self, mailbox_id: MailboxId) -> MailboxChange:
        return MailboxChange(mailbox_id, self.highest, len(self.messages) + 1, len(self.messages))

    async def changed_since(self, mailbox_id: MailboxId, since: int) -> list[Change]:
        self.store_reads += 1
        changes = [(u, f, m) for u, (f, m) in sorted(self.messages.items()) if m > since]
        for uid, flags in self.after_read:
            self.commit(uid, *flags)
        self.after_read.clear()
        return changes

    async def vanished(self, mailbox_id: MailboxId, since: int) -> list[int]:
        return []

    async def news_since(
        self, mailbox_id: MailboxId, since: int
    ) -> tuple[MailboxChange, list[Change]]:
        version = await self.mailbox_version(mailbox_id)
        if version.highestmodseq <= since:
            return version, []
        return version, await self.changed_since(mailbox_id, since)

    async def set_flags(
        self, mailbox_id: MailboxId, uids: list[int], flags: Any, mode: FlagMode, _: Any = None
    ) -> FlagResult:
        assert mode is FlagMode.ADD
        for uid, earlier in self.before_store:
            self.commit(uid, *earlier)
        self.before_store.clear()
        changed = []
        for uid in uids:
            modseq = self.commit(uid, *self.messages[uid][0], *flags)
            changed.append((uid, self.messages[uid][0], modseq))
        for uid, later in self.after_store:
            self.commit(uid, *later)
        self.after_store.clear()
        return FlagResult(tuple(changed), (), self.highest)


def _session(store: _Store) -> tuple[ImapSession, RecordingConnection]:
    session, connection = logged_in_session(store)
    messages = [(uid, flags, modseq) for uid, (flags, modseq) in store.messages.items()]
    session.view = SelectedView.open(
        7, 1, messages, store.highest, len(messages) + 1, read_only=False,
        system_flags=SYSTEM_FLAGS,
    )  # fmt: skip
    session.view.condstore = True
    session.view.tell_recent = False
    return session, connection


def _lines(session: ImapSession, connection: RecordingConnection, command: bytes) -> list[bytes]:
    connection.written.clear()

    async def run() -> None:
        await session.handle(session.reader.feed(command + b"\r\n"))
        await session.answer_runs()  # a STORE is answered once committed

    asyncio.run(run())
    return [line for line in bytes(connection.written).split(b"\r\n") if line]


def _told(lines: list[bytes]) -> list[int]:
    """The sequence numbers of the FETCH responses, once each time told."""
    return [int(m.group(1)) for line in lines if (m := re.match(rb"\* (\d+) FETCH", line))]


def test_a_change_in_the_answer_is_told_once_with_flags_and_modseq() -> None:
    store = _Store(10)
    session, connection = _session(store)
    since = store.highest
    third = store.commit(3, "\\Seen")
    store.commit(7, "$Work")
    lines = _lines(session, connection, b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since)
    assert lines[0].startswith(b"* FLAGS (")  # $Work is new: FLAGS before the FETCH showing it
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (") and b"$Work" in lines[1]
    assert lines[2:4] == [
        b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (%d))" % third,
        b"* 7 FETCH (UID 7 FLAGS ($Work) MODSEQ (%d))" % (third + 1),
    ]
    assert lines[4].startswith(b"a OK")
    assert store.store_reads == 1  # the command's own look at the mailbox, not a second
    assert _told(_lines(session, connection, b"b NOOP")) == []


def test_changes_the_sequence_set_leaves_out_are_told_before_the_answer() -> None:
    store = _Store(10)
    session, connection = _session(store)
    since = store.highest
    store.commit(2, "\\Flagged")
    store.commit(9, "\\Seen")
    lines = _lines(session, connection, b"a FETCH 1:5 (FLAGS) (CHANGEDSINCE %d)" % since)
    assert lines[0] == b"* 9 FETCH (FLAGS (\\Seen) MODSEQ (%d))" % store.highest
    assert lines[1] == b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (%d))" % (store.highest - 1)
    assert lines[2].startswith(b"a OK") and len(lines) == 3


def test_without_flags_in_the_answer_the_flags_come_as_news_and_the_answer_has_modseq() -> None:
    store = _Store(10)
    session, connection = _session(store)
    since = store.highest
    modseq = store.commit(4, "\\Answered")
    lines = _lines(session, connection, b"a UID FETCH 1:* (UID) (CHANGEDSINCE %d)" % since)
    assert lines == [
        b"* 4 FETCH (FLAGS (\\Answered) MODSEQ (%d))" % modseq,
        b"* 4 FETCH (UID 4 MODSEQ (%d))" % modseq,
        b"a OK FETCH completed",
    ]


def test_a_change_committed_after_the_commands_look_is_told_at_the_next_command() -> None:
    store = _Store(10)
    session, connection = _session(store)
    since = store.highest
    store.commit(5, "\\Seen")
    store.after_read = [(5, frozenset({"\\Seen", "\\Deleted"})), (6, frozenset({"\\Seen"}))]
    lines = _lines(session, connection, b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since)
    assert lines == [b"* 5 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (%d))" % (since + 1), lines[-1]]
    lines = _lines(session, connection, b"b NOOP")
    assert lines == [
        b"* 5 FETCH (FLAGS (\\Deleted \\Seen) MODSEQ (%d))" % (since + 2),
        b"* 6 FETCH (FLAGS (\\Seen) MODSEQ (%d))" % (since + 3),
        b"b OK NOOP completed",
    ]


def test_changedsince_older_than_the_session_reads_all_the_changes_once() -> None:
    store = _Store(300)  # more than the session looks through itself
    store.commit(150, "\\Seen")
    session, connection = _session(store)
    store.commit(20, "\\Flagged")
    lines = _lines(session, connection, b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 299)")
    assert sorted(_told(lines)) == [20, 20, 150, 300]  # news of 20, then the answer
    assert lines[0] == b"* 20 FETCH (FLAGS (\\Flagged) MODSEQ (302))"
    assert lines[1:4] == [
        b"* 20 FETCH (UID 20 FLAGS (\\Flagged) MODSEQ (302))",
        b"* 150 FETCH (UID 150 FLAGS (\\Seen) MODSEQ (301))",
        b"* 300 FETCH (UID 300 FLAGS () MODSEQ (300))",
    ]


def test_a_silent_store_is_not_told_and_the_answer_then_tells_each_change_once() -> None:
    store = _Store(10)
    session, connection = _session(store)
    since = store.highest
    other = store.commit(7, "\\Flagged")
    lines = _lines(session, connection, b"s UID STORE 3 +FLAGS.SILENT (\\Seen)")
    assert lines == [b"* 7 FETCH (FLAGS (\\Flagged) MODSEQ (%d))" % other, lines[-1]]
    assert lines[-1].startswith(b"s OK")
    lines = _lines(session, connection, b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since)
    assert lines == [
        b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (%d))" % store.highest,
        b"* 7 FETCH (UID 7 FLAGS (\\Flagged) MODSEQ (%d))" % other,
        b"a OK FETCH completed",
    ]


def test_a_change_made_right_after_a_store_is_told_after_the_stores_own_answer() -> None:
    store = _Store(10)
    session, connection = _session(store)
    for later in (set(), {"\\Seen", "$Other"}):  # back to the flags told before, and another
        store.after_store = [(3, frozenset(later))]
        lines = _lines(session, connection, b"s UID STORE 3 +FLAGS (\\Seen)")
        fetches = [line for line in lines if b" FETCH " in line]
        assert fetches[0].startswith(b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (")
        flags = " ".join(sorted(later)).encode()
        assert fetches[1:] == [b"* 3 FETCH (FLAGS (%s) MODSEQ (%d))" % (flags, store.highest)]
        assert lines[-1].startswith(b"s OK")
        assert _told(_lines(session, connection, b"n NOOP")) == []


def test_a_store_that_was_all_that_changed_the_mailbox_asks_the_store_nothing_after() -> None:
    store = _Store(10)
    session, connection = _session(store)
    lines = _lines(session, connection, b"s UID STORE 3 +FLAGS (\\Seen)")
    assert lines == [b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (%d))" % store.highest, lines[-1]]
    assert lines[-1].startswith(b"s OK") and store.store_reads == 0
    assert session.view is not None and session.view.highestmodseq == store.highest
    other = store.commit(5, "$Later")  # the next command still learns of what came after
    assert _lines(session, connection, b"n NOOP")[-2:] == [  # after a new FLAGS
        b"* 5 FETCH (FLAGS ($Later) MODSEQ (%d))" % other,
        b"n OK NOOP completed",
    ]


def test_a_change_committed_between_the_look_and_the_write_is_told_before_the_ok() -> None:
    store = _Store(10)
    session, connection = _session(store)
    store.before_store = [(8, frozenset({"\\Flagged"}))]
    lines = _lines(session, connection, b"s UID STORE 3 +FLAGS (\\Seen)")
    fetches = [line for line in lines if b" FETCH " in line]
    assert fetches == [
        b"* 3 FETCH (UID 3 FLAGS (\\Seen) MODSEQ (%d))" % store.highest,
        b"* 8 FETCH (FLAGS (\\Flagged) MODSEQ (%d))" % (store.highest - 1),
    ]
    assert lines[-1].startswith(b"s OK") and store.store_reads == 1
    assert _told(_lines(session, connection, b"n NOOP")) == []


def test_a_sequence_number_out_of_range_is_bad_and_the_news_still_comes_first() -> None:
    store = _Store(10)
    session, connection = _session(store)
    modseq = store.commit(4, "\\Seen")
    lines = _lines(session, connection, b"a FETCH 11 (FLAGS) (CHANGEDSINCE 1)")
    assert lines[0] == b"* 4 FETCH (FLAGS (\\Seen) MODSEQ (%d))" % modseq
    assert lines[1].startswith(b"a BAD") and len(lines) == 2

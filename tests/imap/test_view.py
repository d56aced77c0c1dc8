"""What a client of the selected mailbox is told when others change it: keywords come
in a new FLAGS response before the FETCH that shows them, and LOGOUT tells no news."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from poczta.imap.encoder import FetchData
from poczta.imap.session.core import SessionEnd
from poczta.imap.view import CHANGE_LOG, Change, SelectedView
from poczta.store.base import SYSTEM_FLAGS, MailboxChange, MailboxId
from tests.imap.session_harness import logged_in_session

SYSTEM = "\\Answered \\Deleted \\Draft \\Flagged \\Seen"


def wire(responses: Sequence[Any]) -> bytes:
    return b"".join(r.encode(False) for r in responses)


def opened(messages: Sequence[Change], highestmodseq: int = 3) -> SelectedView:
    return SelectedView.open(
        7, 1, messages, highestmodseq, 10, read_only=False, system_flags=SYSTEM_FLAGS
    )


def test_flag_list_names_the_keywords_already_in_use() -> None:
    view = opened([(1, frozenset({"$Label2", "\\Seen"}), 1), (2, frozenset({"$Label1"}), 2)])
    assert view.flag_list() == [*SYSTEM_FLAGS, "$Label1", "$Label2"]


def test_a_keyword_another_session_set_comes_in_flags_before_the_fetch() -> None:
    view = opened([(1, frozenset(), 1), (2, frozenset({"$Label1"}), 2)])
    view.absorb([(1, frozenset({"$Label5", "\\Flagged"}), 4)], [], 4)
    assert (
        wire(view.announce(allow_expunge=True))
        == (
            f"* FLAGS ({SYSTEM} $Label1 $Label5)\r\n"
            f"* OK [PERMANENTFLAGS ({SYSTEM} $Label1 $Label5 \\*)] Flags permitted\r\n"
            "* 1 FETCH (FLAGS ($Label5 \\Flagged))\r\n"
        ).encode()
    )
    view.absorb([(2, frozenset({"$Label5"}), 5)], [], 5)
    assert wire(view.announce(allow_expunge=True)) == b"* 2 FETCH (FLAGS ($Label5))\r\n"


def test_a_new_message_with_a_new_keyword_comes_after_a_new_flags() -> None:
    view = opened([(1, frozenset(), 1)])
    view.tell_recent = False
    view.absorb([(4, frozenset({"Junk"}), 4)], [], 4)
    assert (
        wire(view.announce(allow_expunge=True))
        == (
            f"* FLAGS ({SYSTEM} Junk)\r\n"
            f"* OK [PERMANENTFLAGS ({SYSTEM} Junk \\*)] Flags permitted\r\n* 2 EXISTS\r\n"
        ).encode()
    )


def test_flags_the_session_itself_shows_introduce_their_keywords_once() -> None:
    view = opened([(1, frozenset({"$Label1"}), 1), (2, frozenset(), 2)])
    view.told(1, frozenset({"$Label1"}), 4)
    assert view.keyword_news() == []
    view.told(2, frozenset({"$Label3", "\\Seen"}), 5)  # set by another session meanwhile
    assert (
        wire(view.keyword_news())
        == (
            f"* FLAGS ({SYSTEM} $Label1 $Label3)\r\n"
            f"* OK [PERMANENTFLAGS ({SYSTEM} $Label1 $Label3 \\*)] Flags permitted\r\n"
        ).encode()
    )
    assert view.keyword_news() == []


def test_a_read_only_view_gets_the_new_flags_and_still_no_permanent_flags() -> None:
    view = SelectedView.open(
        7, 1, [(1, frozenset(), 1)], 3, 10, read_only=True, system_flags=SYSTEM_FLAGS
    )
    assert wire([view.permanent_flags()]) == b"* OK [PERMANENTFLAGS ()] No permanent flags\r\n"
    view.absorb([(1, frozenset({"$Work"}), 4)], [], 4)
    assert (
        wire(view.announce(allow_expunge=True))
        == (f"* FLAGS ({SYSTEM} $Work)\r\n* 1 FETCH (FLAGS ($Work))\r\n").encode()
    )


class _Store:
    """A mailbox in which another session has just flagged message 1 \\Seen."""

    async def mailbox_version(self, mailbox_id: MailboxId) -> MailboxChange:
        return MailboxChange(mailbox_id, 5, 10, 1)

    async def changed_since(self, mailbox_id: MailboxId, since: int) -> list[Change]:
        return [(1, frozenset({"\\Seen"}), 5)]

    async def vanished(self, mailbox_id: MailboxId, since: int) -> list[int]:
        return []

    async def news_since(
        self, mailbox_id: MailboxId, since: int
    ) -> tuple[MailboxChange, list[Change]]:
        return await self.mailbox_version(mailbox_id), await self.changed_since(mailbox_id, since)


def test_logout_answers_bye_and_ok_without_news_of_the_mailbox() -> None:
    session, connection = logged_in_session(_Store())
    session.view = opened([(1, frozenset(), 1)])

    with pytest.raises(SessionEnd):
        asyncio.run(session.handle(session.reader.feed(b"a1 LOGOUT\r\n")))
    assert bytes(connection.written) == (
        b"* BYE mx.example.test logging out\r\na1 OK LOGOUT completed\r\n"
    )


def test_many_expunges_are_told_highest_first_and_leave_the_rest_numbered_in_order() -> None:
    view = opened([(uid, frozenset(), uid) for uid in range(1, 41)])
    gone = [3, 4, 10, 11, 12, 20, 25, 30, 39, 40]  # more than are deleted one by one
    told = wire(view.expunged_now(gone))
    # each number is the message's own at the moment it is told
    assert told == b"".join(b"* %d EXPUNGE\r\n" % uid for uid in reversed(gone))
    kept = [uid for uid in range(1, 41) if uid not in gone]
    assert view.uids == kept
    assert view.msn(kept[-1]) == len(kept)


def test_a_few_expunges_are_told_the_same_way() -> None:
    view = opened([(uid, frozenset(), uid) for uid in range(1, 6)])
    assert wire(view.expunged_now([2, 4])) == b"* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n"
    assert view.uids == [1, 3, 5]


def test_the_message_count_says_when_expunges_may_be_missing() -> None:
    view = opened([(1, frozenset(), 1), (2, frozenset(), 2), (3, frozenset(), 3)])
    flag_change = [(2, frozenset({"\\Seen"}), 4)]
    assert not view.may_miss_expunges(flag_change, 3)
    assert view.may_miss_expunges(flag_change, 2)  # one of the three is gone
    arrival = [(4, frozenset(), 5)]
    assert not view.may_miss_expunges(arrival, 4)
    assert view.may_miss_expunges(arrival, 3)  # one arrived, one went
    view.absorb([], [1], 5)  # an expunge known, not yet told
    assert not view.may_miss_expunges([], 2)


def test_flags_and_modseq_are_written_as_before_for_recent_and_plain_messages() -> None:
    view = opened([(1, frozenset({"\\Seen", "$A"}), 2), (2, frozenset({"\\Seen", "$A"}), 3)])
    view.condstore = True
    view.recent = {2}
    assert (
        wire([FetchData(1, view.flag_items(1))]) == b"* 1 FETCH (FLAGS ($A \\Seen) MODSEQ (2))\r\n"
    )
    assert (
        wire([FetchData(2, view.flag_items(2))])
        == b"* 2 FETCH (FLAGS ($A \\Seen \\Recent) MODSEQ (3))\r\n"
    )


def test_an_imap4rev2_session_is_never_told_recent_in_flags() -> None:
    view = opened([(1, frozenset({"\\Seen"}), 2)])
    view.recent = {1}
    view.tell_recent = False
    assert wire([FetchData(1, view.flag_items(1))]) == b"* 1 FETCH (FLAGS (\\Seen))\r\n"


def test_changed_since_answers_alike_from_its_log_and_by_looking_at_each_message() -> None:
    count = CHANGE_LOG + 1000  # more messages changed than the log keeps: its oldest half goes
    view = opened([(uid, frozenset(), uid) for uid in range(1, count + 1)], highestmodseq=count)
    modseq = count
    for step in range(count + 200):  # some changed twice
        modseq += 1
        view.absorb([(1 + step * 37 % count, frozenset({"\\Seen"}), modseq)], [], modseq)
    view.told(5, frozenset({"\\Seen", "\\Flagged"}), modseq + 1)
    view.expunged_now([9])
    assert not view.knows_changes_since(count) and view.knows_changes_since(modseq - 1000)
    for since in (0, count, modseq - CHANGE_LOG, modseq - 1000, modseq - 1, modseq, modseq + 1):
        scanned = [uid for uid in view.uids if view.modseqs[uid] > since]
        assert view.changed_since(since) == scanned, since


def test_own_changes_each_taking_the_next_modseq_catch_the_view_up_and_a_gap_does_not() -> None:
    view = opened([(1, frozenset(), 1), (2, frozenset(), 2)], highestmodseq=3)
    assert view.caught_up([(4, True), (4, False), (5, True)])  # one changed nothing
    assert view.highestmodseq == 5
    assert not view.caught_up([(7, True)])  # 6 was someone else's
    assert not view.caught_up([(6, True), (8, True)])
    assert view.highestmodseq == 5  # left for the store to say what came between
    assert not view.caught_up([(6, False)])  # nothing changed by us, but 6 happened


@pytest.mark.parametrize("condstore", [False, True])
def test_a_view_only_plan_writes_the_same_from_view_items_as_from_flag_items(
    condstore: bool,
) -> None:
    from poczta.imap.fetch import FetchItem
    from poczta.imap.fetch_plan import plan_for

    view = opened([(1, frozenset({"$Label1", "\\Seen"}), 2), (2, frozenset(), 3)])
    view.condstore = condstore
    view.recent.add(2)
    for names in (["FLAGS"], ["FLAGS", "MODSEQ"], ["MODSEQ"]):
        plan = plan_for([FetchItem(n) for n in names], with_uid=True, utf8=False, seen_set=False)
        assert plan is not None
        for number, uid in ((1, 1), (2, 2)):
            assert plan.encode_view(number, uid, *view.view_items(uid)) == plan.encode(
                number, uid, None, view.flag_items(uid)
            )

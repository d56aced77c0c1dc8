"""The facts of the selected mailbox SEARCH, SORT and THREAD run on, kept between commands.

One store read gives every message's facts (`fetch_meta`). The session keeps them for
its next SEARCH, SORT or THREAD, with the mailbox's HIGHESTMODSEQ they are true at.
When the mailbox has moved on since, there is no need to read it all again: of a
message's facts only its flags and MODSEQ ever change; the view holds those of every
message it numbers, brought up to date before the command, and tells which messages'
MODSEQs moved since a given one (`SelectedView.changed_since`: from its log of moves,
or past the log by looking at each message's); and a new message has a UID above every
one known. So the kept facts take the flags of the messages that moved from the view,
and only the new messages are read from the store: a client that sets a flag and then
searches UNSEEN does not have the whole mailbox read again. Only for another mailbox
(or the same with a new UIDVALIDITY) is everything read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from poczta.imap.search_eval import SearchableMessage
from poczta.imap.view import SelectedView
from poczta.message import Envelope
from poczta.store.base import MailboxId, MessageMeta

if TYPE_CHECKING:
    from collections.abc import Callable

    from poczta.imap.session.core import ImapSession

__all__ = ["SearchFacts", "search_facts"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FactsKey = tuple[int, int, int]  # mailbox id, UIDVALIDITY, the HIGHESTMODSEQ they hold at


@dataclass(frozen=True)
class _Gone:
    """A message this client still numbers but the store has expunged: matches little."""

    uid: int
    modseq: int = 0
    flags: frozenset[str] = frozenset({"\\Deleted"})
    internal_date: datetime = EPOCH
    size: int = 0
    sent_date: datetime | None = None
    subject: str = ""
    envelope: Envelope = field(default_factory=Envelope)
    search_headers: tuple[tuple[str, str], ...] = ()
    digest: str = ""


class SearchFacts:
    """Every message's facts at one HIGHESTMODSEQ of a mailbox (`key`). Also kept: the
    messages in the client's order, and their sequence numbers grouped by flags, while
    the client's numbering stands."""

    def __init__(self, key: FactsKey, by_uid: dict[int, MessageMeta], top: int = -1) -> None:
        self.key = key
        self.by_uid = by_uid
        self.top = top if top >= 0 else max(by_uid, default=0)  # the highest UID known
        self._numbering: tuple[int, int] | None = None  # (count, highest UID) of `_ordered`
        self._ordered: list[SearchableMessage] = []
        self._by_flags: dict[frozenset[str], set[int]] | None = None

    def take_order(self, kept: SearchFacts, moved: list[tuple[int, MessageMeta]]) -> None:
        """Take over the client's order and the flag groups of `kept`, the same messages
        in the same numbering, with the messages of `moved` (number, facts) changed."""
        self._numbering, self._ordered, self._by_flags = (
            kept._numbering,
            kept._ordered,
            kept._by_flags,
        )
        ordered, groups = self._ordered, self._by_flags
        for number, meta in moved:
            if groups is not None:
                group = groups[ordered[number - 1].flags]
                group.discard(number)
                if not group:
                    del groups[ordered[number - 1].flags]
                groups.setdefault(meta.flags, set()).add(number)
            ordered[number - 1] = meta

    def ordered(self, uids: list[int]) -> list[SearchableMessage]:
        """The messages in the order of `uids`, the client's sequence numbers."""
        # Any arrival raises the highest UID (new ones are higher), any expunge alone
        # lowers the count: this pair changes whenever the client's numbering does.
        numbering = (len(uids), uids[-1] if uids else 0)
        if numbering != self._numbering:
            by_uid = self.by_uid
            self._ordered = [by_uid.get(uid) or _Gone(uid) for uid in uids]
            self._numbering, self._by_flags = numbering, None
        return self._ordered

    @property
    def numbering(self) -> tuple[int, int] | None:
        """(count, highest UID) of the client's numbering `ordered` last followed."""
        return self._numbering

    def holds(self, messages: list[SearchableMessage]) -> bool:
        """Whether `messages` is this mailbox in the order `ordered` gave last."""
        return messages is self._ordered

    def numbers_with(self, test: Callable[[frozenset[str]], bool]) -> list[int]:
        """The sequence numbers of the messages whose flags pass `test`, ascending."""
        if self._by_flags is None:
            self._by_flags = {}
            for number, message in enumerate(self._ordered, 1):
                self._by_flags.setdefault(message.flags, set()).add(number)
        found = [n for flags, numbers in self._by_flags.items() if test(flags) for n in numbers]
        found.sort()
        return found


async def search_facts(session: ImapSession) -> SearchFacts:
    """The facts of the selected mailbox as of its view, in the client's order: those
    kept, brought up to date, or read anew."""
    view = session.view
    assert view is not None
    key = (view.mailbox_id, view.uidvalidity, view.highestmodseq)
    facts = session.search_cache
    if facts is not None and facts.key != key:
        facts = await _caught_up(session, view, facts, key)
    if facts is None:
        metas = await session.store.fetch_meta(MailboxId(view.mailbox_id))
        facts = SearchFacts(key, {m.uid: m for m in metas})
    session.search_cache = facts
    facts.ordered(view.uids)
    return facts


async def _caught_up(
    session: ImapSession, view: SelectedView, kept: SearchFacts, key: FactsKey
) -> SearchFacts | None:
    """`kept` brought to `key` from the view and a read of the new messages alone, or
    None when `kept` is of another mailbox or not of an earlier moment."""
    since = kept.key[2]
    if kept.key[:2] != key[:2] or since > key[2]:
        return None
    by_uid = kept.by_uid  # taken over: `kept` is not used again
    moved: list[tuple[int, MessageMeta]] = []
    for uid in view.changed_since(since):
        meta = by_uid.get(uid)
        if meta is not None and (number := view.msn(uid)) is not None:
            by_uid[uid] = meta = meta.with_flags(view.flags[uid], view.modseqs[uid])
            moved.append((number, meta))
    top = kept.top
    new = view.uids_from(top + 1)
    if new:
        for meta in await session.store.fetch_meta(MailboxId(view.mailbox_id), new):
            by_uid[meta.uid] = meta
        top = new[-1]
    if len(by_uid) > len(view.uids):  # some expunged: not kept for ever
        numbered = view.flags
        by_uid = {uid: meta for uid, meta in by_uid.items() if uid in numbered}
    facts = SearchFacts(key, by_uid, top)
    if kept.numbering == (len(view.uids), view.uids[-1] if view.uids else 0):
        facts.take_order(kept, moved)
    return facts

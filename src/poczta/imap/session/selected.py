"""The selected state: SELECT/EXAMINE (with CONDSTORE and QRESYNC), NOOP, CHECK, IDLE,
EXPUNGE, UID EXPUNGE, CLOSE, UNSELECT, and bringing the session's view up to date.

Before each command's tagged answer the session tells its client what changed in the
selected mailbox (`refresh`, then `SelectedView.announce`): one cheap read of the
mailbox's version, and only when it moved, the changes since the last MODSEQ the client
was told and, unless the mailbox's message count says none can be missing (as after
this session's own MOVE or a flag change), the UIDs expunged since (the store keeps
them for VANISHED). In IDLE the
same happens whenever the store reports a change (`MailStore.changes`), from any process.

\\Deleted and EXPUNGE (or CLOSE) are how IMAP removes mail; a POP3 session on the same
INBOX keeps its own numbering until it ends, and whichever commits an expunge first
wins: the other's later expunge of the same message is simply a no-op (the store
ignores UIDs already gone), and a POP3 RETR of a message IMAP expunged meanwhile gets
-ERR.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.encoder import Code, Data, FetchData, Untagged, exists, flags, recent, vanished
from poczta.imap.names import canonical
from poczta.imap.sequence import compact
from poczta.imap.view import SelectedView
from poczta.store.base import (
    SYSTEM_FLAGS,
    MailboxChange,
    MailboxId,
    MessageMeta,
    NotFound,
    StoreError,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession


async def refresh(session: ImapSession) -> None:
    """Take in what changed in the selected mailbox since the view last looked."""
    view = session.view
    if view is None:
        return
    since = view.highestmodseq
    with _selected_mailbox_gone(session):
        version, changes = await session.store.news_since(MailboxId(view.mailbox_id), since)
    await _take_in(session, view, since, version, changes)


async def refresh_with_facts(
    session: ImapSession, view: SelectedView, uids: Sequence[int], *, kept_only: bool
) -> tuple[list[MessageMeta], dict[str, bytes]]:
    """`refresh`, and the facts of `uids` (as `fetch_meta_with_bodies`) read with the
    news: true of the mailbox as the view then knows it."""
    since = view.highestmodseq
    with _selected_mailbox_gone(session):
        found = await session.store.news_and_facts(
            MailboxId(view.mailbox_id), since, uids, kept_only=kept_only
        )
    await _take_in(session, view, since, found.version, found.changes)
    return found.metas, found.bodies


@contextlib.contextmanager
def _selected_mailbox_gone(session: ImapSession) -> Iterator[None]:
    """A selected mailbox deleted meanwhile (by another session) ends the session."""
    try:
        yield
    except NotFound:
        from poczta.imap.session.core import SessionEnd

        session.send(Untagged("BYE", "The selected mailbox was deleted"))
        raise SessionEnd() from None


async def _take_in(
    session: ImapSession,
    view: SelectedView,
    since: int,
    version: MailboxChange,
    changes: list[tuple[int, frozenset[str], int]],
) -> None:
    if version.highestmodseq <= since:
        return
    gone: list[int] = []
    if view.may_miss_expunges(changes, version.messages):
        gone = await session.store.vanished(MailboxId(view.mailbox_id), since)
    view.absorb(changes, gone, version.highestmodseq)
    arriving = view.arriving
    if arriving:
        box = MailboxId(view.mailbox_id)
        if view.read_only:
            first = await session.store.recent_mark(box)
        else:
            first = await session.store.claim_recent(box, max(arriving) + 1)
        view.recent.update(uid for uid in arriving if uid >= first)


async def noop(session: ImapSession, command: cmd.Command) -> None:
    session.ok(command.tag, f"{type(command).__name__.upper()} completed")


async def check(session: ImapSession, command: cmd.Command) -> None:
    await noop(session, command)


async def idle(session: ImapSession, command: cmd.Command) -> None:
    await refresh(session)
    session.send(*session.updates())
    session.search_cache = None  # an idling session holds no mailbox's facts
    session.idle_tag = command.tag
    session.conn.write(b"+ idling\r\n")
    session.more(session.reader.expect_done())


async def select(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Select) and session.user_id is not None
    if session.view is not None:
        session.view = None
        await session.watch(None)
        session.send(Untagged("OK", "Previous mailbox closed", "CLOSED"))
    if command.qresync is not None and "QRESYNC" not in session.enabled:
        session.bad(command.tag, "ENABLE QRESYNC first")
        return
    try:
        box = await session.store.get_mailbox(session.user_id, canonical(command.mailbox))
    except (NotFound, StoreError):
        session.no(command.tag, "No such mailbox", "NONEXISTENT")
        return
    version = await session.store.mailbox_version(box.id)
    messages = await session.store.changed_since(box.id, 0)
    view = SelectedView.open(
        box.id, box.uidvalidity, messages, version.highestmodseq, version.uidnext,
        read_only=command.read_only, system_flags=SYSTEM_FLAGS,
    )  # fmt: skip
    view.condstore = command.condstore or "CONDSTORE" in session.enabled
    view.qresync = "QRESYNC" in session.enabled
    view.tell_recent = "IMAP4REV2" not in session.enabled
    if command.read_only:
        first = await session.store.recent_mark(box.id)
    else:
        first = await session.store.claim_recent(box.id, version.uidnext)
    view.recent = set(view.uids_from(first))
    session.view = view
    responses: list[Data | FetchData | Untagged] = [
        flags(view.flag_list()),
        exists(view.exists),
    ]
    if view.tell_recent:
        responses.append(recent(len(view.recent)))
    unseen = next(
        (n for n, uid in enumerate(view.uids, 1) if "\\Seen" not in view.flags[uid]), None
    )
    if unseen is not None and "IMAP4REV2" not in session.enabled:
        responses.append(Untagged("OK", "First unseen", Code.number("UNSEEN", unseen)))
    responses += [
        Untagged("OK", "UIDs valid", Code.number("UIDVALIDITY", view.uidvalidity)),
        Untagged("OK", "Predicted next UID", Code.number("UIDNEXT", view.uidnext)),
        Untagged("OK", "Highest", Code.number("HIGHESTMODSEQ", view.highestmodseq)),
    ]
    responses.append(view.permanent_flags())
    if command.qresync is not None and command.qresync.uidvalidity == view.uidvalidity:
        responses += await _resync(session, view, command.qresync)
    session.send(*responses)
    await session.watch(view)
    mode = "READ-ONLY" if command.read_only else "READ-WRITE"
    session.ok(command.tag, f"{'EXAMINE' if command.read_only else 'SELECT'} completed", mode)


async def _resync(
    session: ImapSession, view: SelectedView, qresync: cmd.Qresync
) -> list[Data | FetchData]:
    """QRESYNC: what was expunged and changed since the client's MODSEQ (RFC 7162 §3.2.5)."""
    out: list[Data | FetchData] = []
    gone = await session.store.vanished(MailboxId(view.mailbox_id), qresync.modseq)
    if qresync.known_uids is not None:
        top = max(gone, default=0)
        gone = [uid for uid in gone if qresync.known_uids.contains(uid, top)]
    if gone:
        out.append(vanished(compact(gone), earlier=True))
    for uid in view.changed_since(qresync.modseq):
        msn = view.msn(uid)
        assert msn is not None
        out.append(FetchData(msn, view.flag_items(uid)))
    return out


async def _expunge_uids(session: ImapSession, uids: list[int] | None) -> list[Data | FetchData]:
    """Expunge the messages flagged \\Deleted (of `uids` only, for UID EXPUNGE)."""
    view = session.view
    assert view is not None
    if uids is None:
        gone = await session.store.expunge(MailboxId(view.mailbox_id), None)
    else:
        await refresh(session)
        current = [uid for uid in uids if "\\Deleted" in view.flags.get(uid, frozenset())]
        gone = await session.store.expunge(MailboxId(view.mailbox_id), current) if current else []
    if gone:
        version = await session.store.mailbox_version(MailboxId(view.mailbox_id))
        view.highestmodseq = max(view.highestmodseq, version.highestmodseq)
    return view.expunged_now(gone)


async def expunge(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Expunge)
    view = session.view
    assert view is not None
    if view.read_only:
        session.no(command.tag, "The mailbox is read-only", "READ-ONLY")
        return
    uids = view.by_uid(command.uids) if command.uids is not None else None
    session.send(*await _expunge_uids(session, uids))
    session.ok(command.tag, "EXPUNGE completed", Code.number("HIGHESTMODSEQ", view.highestmodseq))


async def close(session: ImapSession, command: cmd.Command) -> None:
    view = session.view
    assert view is not None
    if not view.read_only:
        await session.store.expunge(MailboxId(view.mailbox_id), None)
    session.view = None
    await session.watch(None)
    session.ok(command.tag, "CLOSE completed")


async def unselect(session: ImapSession, command: cmd.Command) -> None:
    session.view = None
    await session.watch(None)
    session.ok(command.tag, "UNSELECT completed")

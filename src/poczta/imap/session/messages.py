"""IMAP commands on messages of the selected mailbox: FETCH, COPY, MOVE, SEARCH.

FETCH reads the cached facts of the messages asked for in one store read (in slices of
`FETCH_SLICE`, written out as they are built so that a `1:*` of a large mailbox never
sits whole in memory) and the stored bytes only for items that need them, many bodies
in one store read (`BlobStore.read_many`, up to `BODY_BATCH_OCTETS` at a time). A non-PEEK
body fetch in a read-write mailbox sets \\Seen, and the response carries the new
FLAGS. COPY and MOVE run in one store transaction each and answer COPYUID (UIDPLUS); a
COPY past a quota limit is NO [OVERQUOTA]. While a FETCH, STORE or SEARCH by sequence
number runs, no EXPUNGE is sent (RFC 9051 §7.5.2); the UID forms may carry them. STORE
is `poczta.imap.session.store_flags`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from poczta.imap import commands as cmd
from poczta.imap.encoder import Code, FetchData, Tagged, Untagged, vanished
from poczta.imap.fetch import FetchAttribute, FetchItem
from poczta.imap.fetch_plan import FetchPlan, plan_for
from poczta.imap.fetch_response import (
    UnknownEncoding,
    asks_item,
    fetch_items,
    needs_body,
    needs_structure,
    sets_seen,
)
from poczta.imap.names import canonical
from poczta.imap.sequence import SequenceSet, compact
from poczta.imap.session.quota import OVERQUOTA, lacks_room
from poczta.imap.view import OutOfRange, SelectedView
from poczta.message.mime import parse_structure
from poczta.store.base import FlagMode, MailboxId, MessageMeta, NotFound

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

FETCH_SLICE = 500
BODY_BATCH_OCTETS = 4 * 1024 * 1024  # bodies asked of the store at once, by their sizes
CHANGED_SCAN = 256  # CHANGEDSINCE over more messages asks the store which changed


def _view(session: ImapSession) -> SelectedView:
    assert session.view is not None
    return session.view


def resolve_targets(session: ImapSession, sequence: SequenceSet, uid: bool) -> list[int] | str:
    """The UIDs a command's sequence set names, or the text of its BAD answer."""
    view = _view(session)
    if sequence.saved:
        known = set(view.uids)
        return [u for u in session.saved_search if u in known]
    try:
        return view.resolve(sequence, uid)
    except OutOfRange as exc:
        return str(exc)


def _targets(session: ImapSession, tag: str, sequence: SequenceSet, uid: bool) -> list[int] | None:
    found = resolve_targets(session, sequence, uid)
    if isinstance(found, str):
        session.bad(tag, found)
        return None
    return found


def enable_condstore(session: ImapSession) -> None:
    """A command used CONDSTORE: from now on MODSEQs are told (RFC 7162 §3.1)."""
    session.send(*condstore_enabled(_view(session)))


def condstore_enabled(view: SelectedView) -> list[Untagged]:
    """Turn on CONDSTORE for the view; the response that says so, the first time."""
    if view.condstore:
        return []
    view.condstore = True
    return [Untagged("OK", "CONDSTORE enabled", Code.number("HIGHESTMODSEQ", view.highestmodseq))]


async def fetch(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Fetch)
    view = _view(session)
    if command.changed_since is not None:  # the news and the messages together
        uids = await _changed_targets(session, view, command)
    else:
        session.send(*view.announce(allow_expunge=command.uid))
        uids = _targets(session, command.tag, command.sequence, command.uid)
    if uids is None:
        return
    attributes: tuple[FetchAttribute, ...] = command.attributes
    if command.changed_since is not None:
        if command.vanished and command.uid and "QRESYNC" in session.enabled:
            gone = await session.store.vanished(MailboxId(view.mailbox_id), command.changed_since)
            gone = [u for u in gone if command.sequence.contains(u, max(gone, default=0))]
            if gone:
                session.send(vanished(compact(gone), earlier=True))
        if not asks_item(attributes, "MODSEQ"):
            attributes = (*attributes, FetchItem("MODSEQ"))
    if asks_item(attributes, "MODSEQ"):
        enable_condstore(session)
    failure = await _fetch_messages(session, view, uids, attributes, command.uid)
    if failure is not None:
        session.no(command.tag, "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
        return
    # The command's own check of the mailbox was just made: only a FETCH that set \Seen
    # has changes of its own to take in before the OK.
    changed = sets_seen(attributes) and not view.read_only
    await _finish(session, command.tag, "FETCH completed", command.uid, refresh=changed)


async def _changed_targets(
    session: ImapSession, view: SelectedView, command: cmd.Fetch
) -> list[int] | None:
    """CHANGEDSINCE: the news due, then the messages asked for whose MODSEQ is above the
    client's (None: answered BAD). A flag change among those the answer tells with
    FLAGS and MODSEQ from the view is not announced as well: the answer's response is
    that message's flag update (RFC 7162 §3.2.4), as it would be for a new message."""
    assert command.changed_since is not None
    since = command.changed_since
    with_flags = _told_from_view(session, command)
    found: list[int] | str = []

    def answering() -> Container[int]:
        nonlocal found
        found = resolve_targets(session, command.sequence, command.uid)
        if isinstance(found, str) or not view.knows_changes_since(since):
            return ()
        found = _changed_among(view, found, since)
        if not with_flags:
            return ()
        return {uid for uid in found if not view.expunge_pending(uid)}

    session.send(*view.announce(allow_expunge=command.uid, answering=answering))
    if isinstance(found, str):
        session.bad(command.tag, found)
        return None
    enable_condstore(session)
    if view.knows_changes_since(since):
        return found
    if len(found) > CHANGED_SCAN:  # of many, only those the store names (by its index)
        asked = set(found)
        changed = await session.store.changed_since(MailboxId(view.mailbox_id), since)
        found = [uid for uid, _, _ in changed if uid in asked]
    return [uid for uid in found if view.modseqs.get(uid, 0) > since]


def _changed_among(view: SelectedView, uids: list[int], since: int) -> list[int]:
    """Those of `uids` whose MODSEQ is above `since`, by the view's log of changes."""
    changed = view.changed_since(since)
    if len(uids) == view.exists:  # all of them (1:*, say): the UIDs resolved are distinct
        return changed
    asked = set(uids)
    return [uid for uid in changed if uid in asked]


def _told_from_view(session: ImapSession, command: cmd.Fetch) -> bool:
    """Whether the FETCH's answer is FLAGS (and UID, MODSEQ) from the view alone: a
    response for every message named, none left out for want of the store."""
    attributes = command.attributes
    if not asks_item(attributes, "FLAGS"):
        return False
    plan = plan_for(attributes, with_uid=command.uid, utf8=session.utf8, seen_set=False)
    return plan is not None and not plan.needs_facts


async def _fetch_messages(
    session: ImapSession,
    view: SelectedView,
    uids: Sequence[int],
    attributes: Sequence[FetchAttribute],
    uid_form: bool,
) -> UnknownEncoding | None:
    mark_seen = sets_seen(attributes) and not view.read_only
    read_body = needs_body(attributes)
    plan = plan_for(attributes, with_uid=uid_form, utf8=session.utf8, seen_set=mark_seen)
    if plan is not None and not plan.needs_facts:
        _fetch_from_view(session, view, uids, plan)
        return None
    asked = Asked(attributes, uid_form, mark_seen, plan)
    kept_only = kept_suffice(session, [plan])
    for start in range(0, len(uids), FETCH_SLICE):
        chunk = list(uids[start : start + FETCH_SLICE])
        box = MailboxId(view.mailbox_id)
        if read_body:
            metas, given = await session.store.fetch_meta_with_bodies(
                box, chunk, kept_only=kept_only
            )
        else:
            metas, given = await session.store.fetch_meta(box, chunk, kept_only=kept_only), {}
        if mark_seen:
            await _mark_seen(session, view, [m.uid for m in metas])
        out: list[bytes] = []
        answered = [(msn, meta) for meta in metas if (msn := view.msn(meta.uid)) is not None]
        for group in body_groups(answered, _size) if read_body else [answered]:
            bodies: Sequence[bytes | None] = [None] * len(group)
            if read_body:
                bodies = await bodies_of(session, [meta for _, meta in group], given)
            failure = await encode_group(session, view, group, bodies, asked, out)
            if failure is not None:
                return failure
        session.send(*view.keyword_news())
        session.conn.write(out[0] if len(out) == 1 else b"".join(out))
        if start + FETCH_SLICE < len(uids):  # more to come: let the client take this first
            await session.conn.drain()
    return None


Numbered = tuple[int, MessageMeta]  # a message and its sequence number
T = TypeVar("T")


def _size(numbered: Numbered) -> int:
    return numbered[1].size


def kept_suffice(session: ImapSession, plans: Sequence[FetchPlan | None]) -> bool:
    """Whether FETCHes of these plans need of the store's facts only what the kept texts
    answer from (`fetch_meta`'s kept_only): a plan writes nothing else, and a message
    whose kept text does not serve (none kept, or non-ASCII for a UTF-8 session) is
    read again whole (`encode_group`). A UTF-8 session reads all: more of its messages
    would need that."""
    return not session.utf8 and all(plan is not None for plan in plans)


async def bodies_of(
    session: ImapSession, metas: Sequence[MessageMeta], given: Mapping[str, bytes]
) -> list[bytes]:
    """The bytes of each of `metas`: as `given` (read with their facts) or from the store."""
    missing = [(meta.digest, meta.size) for meta in metas if meta.digest not in given]
    read = iter(await session.store.blobs.read_many(missing) if missing else ())
    return [given[meta.digest] if meta.digest in given else next(read) for meta in metas]


def body_groups(items: Sequence[T], size: Callable[[T], int]) -> list[list[T]]:
    """`items` in runs whose bodies (of `size` octets each) together are at most
    BODY_BATCH_OCTETS (a bigger one alone), to be read from the store a run at a time."""
    groups: list[list[T]] = []
    octets = 0
    for item in items:
        length = size(item)
        if not groups or octets + length > BODY_BATCH_OCTETS:
            groups.append([])
            octets = 0
        groups[-1].append(item)
        octets += length
    return groups


@dataclass(frozen=True, slots=True)
class Asked:
    """What one FETCH command asks, as every message's response needs it."""

    attributes: Sequence[FetchAttribute]
    uid_form: bool
    mark_seen: bool  # the command sets \\Seen: FLAGS go with every response
    plan: FetchPlan | None


async def encode_group(
    session: ImapSession,
    view: SelectedView,
    group: Sequence[Numbered],
    bodies: Sequence[bytes | None],
    asked: Asked,
    out: list[bytes],
) -> UnknownEncoding | None:
    """Append the FETCH responses of `group` (with their `bodies`) to `out`: planned
    when the plan can, else built item by item."""
    plan = asked.plan
    for (msn, meta), data in zip(group, bodies, strict=True):
        if plan is not None:
            flag_items = view.flag_items(meta.uid) if plan.needs_flags else []
            planned = plan.encode(msn, meta.uid, meta, flag_items, data)
            if planned is not None:
                out.append(planned)
                continue
        if not meta.complete:  # read for the plan alone, which cannot answer this one
            whole = await session.store.fetch_meta(MailboxId(view.mailbox_id), [meta.uid])
            if not whole:
                continue  # expunged meanwhile: left out, as the store would
            meta = whole[0]
        built = await _built(session, view, msn, meta, data, asked)
        if isinstance(built, UnknownEncoding):
            return built
        out.append(built)
    return None


def _fetch_from_view(
    session: ImapSession, view: SelectedView, uids: Sequence[int], plan: FetchPlan
) -> None:
    """A FETCH of UID, FLAGS and MODSEQ only: the view has them, the store is not asked."""
    session.conn.write(b"".join(encode_from_view(view, uids, plan)))


def encode_from_view(view: SelectedView, uids: Sequence[int], plan: FetchPlan) -> list[bytes]:
    """The responses of a plan of UID, FLAGS and MODSEQ only (a message the store has
    expunged meanwhile is left out, as the store would)."""
    out: list[bytes] = []
    for uid in uids:
        msn = view.msn(uid)
        if msn is not None and not view.expunge_pending(uid):
            out.append(plan.encode_view(msn, uid, *view.view_items(uid)))
    return out


async def _built(
    session: ImapSession,
    view: SelectedView,
    msn: int,
    meta: MessageMeta,
    data: bytes | None,
    asked: Asked,
) -> bytes | UnknownEncoding:
    """One message's response built item by item; `data`, its bytes when the attributes
    need them."""
    utf8 = session.utf8
    attributes = asked.attributes
    root = None
    if needs_structure(attributes, meta, utf8):
        root = meta.structure
        if root is None:  # stored before structures were kept, and not parsed since
            data = data if data is not None else await session.store.blobs.read(meta.digest)
            root = parse_structure(data)
    wanted = list(attributes)
    if asked.mark_seen and not asks_item(wanted, "FLAGS"):
        wanted.append(FetchItem("FLAGS"))
    flag_items = view.flag_items(meta.uid)
    items = fetch_items(wanted, meta, root, data, flag_items, with_uid=asked.uid_form, utf8=utf8)
    if isinstance(items, UnknownEncoding):
        return items
    return FetchData(msn, items).encode(utf8)


async def _mark_seen(session: ImapSession, view: SelectedView, uids: list[int]) -> None:
    unseen = [u for u in uids if "\\Seen" not in view.flags.get(u, frozenset())]
    if not unseen:
        return
    result = await session.store.set_flags(
        MailboxId(view.mailbox_id), unseen, ["\\Seen"], FlagMode.ADD
    )
    for uid, flags, modseq in result.changed:
        view.told(uid, flags, modseq)


async def _finish(
    session: ImapSession,
    tag: str,
    text: str,
    uid_form: bool,
    code: Code | None = None,
    *,
    refresh: bool = True,
) -> None:
    """Tell what changed meanwhile (this command's own effects included, looked for
    unless `refresh` is False), then the OK."""
    if refresh:
        from poczta.imap.session.selected import refresh as look

        await look(session)
    session.send(*session.updates(allow_expunge=uid_form), Tagged(tag, "OK", text, code))


async def _copy(session: ImapSession, command: cmd.Copy | cmd.Move, move: bool) -> None:
    view = _view(session)
    if move and view.read_only:
        session.no(command.tag, "The mailbox is read-only", "READ-ONLY")
        return
    uids = _targets(session, command.tag, command.sequence, command.uid)
    if uids is None:
        return
    assert session.user_id is not None
    target = canonical(command.mailbox)
    if not move:  # a MOVE stays within the user's mailboxes: the usage does not change
        count, octets = await session.store.messages_size(MailboxId(view.mailbox_id), uids)
        if count and await lacks_room(session, octets, count):
            session.no(command.tag, *OVERQUOTA)
            return
    try:
        validity, pairs = await session.store.copy_messages(
            session.user_id,
            MailboxId(view.mailbox_id),
            uids,
            target,
            move=move,
        )
    except NotFound:
        session.no(command.tag, "No such mailbox", "TRYCREATE")
        return
    code = None
    if pairs:
        code = Code.copy_uid(
            validity, compact([o for o, _ in pairs]), compact([n for _, n in pairs])
        )
    name = "MOVE" if move else "COPY"
    if move:
        session.send(Untagged("OK", "Moved", code))
        session.send(*view.expunged_now([o for o, _ in pairs]))
        await _finish(session, command.tag, f"{name} completed", True)
        return
    await _finish(session, command.tag, f"{name} completed", command.uid, code)


async def copy(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Copy)
    await _copy(session, command, move=False)


async def move(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Move)
    await _copy(session, command, move=True)


async def search(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Search)
    from poczta.imap.session.search import run_search

    await run_search(session, command)


__all__ = [
    "BODY_BATCH_OCTETS",
    "FETCH_SLICE",
    "Asked",
    "body_groups",
    "condstore_enabled",
    "copy",
    "enable_condstore",
    "encode_from_view",
    "encode_group",
    "fetch",
    "move",
    "resolve_targets",
    "search",
]

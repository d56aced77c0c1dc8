"""FETCH runs: pipelined FETCHes that change nothing, answered together.

A client reading many messages one command at a time (`UID FETCH n BODY.PEEK[]`, a
message each) pipelines them. Taken one by one, each would look at the mailbox for
news, read its message's facts and then its body: a round trip to the store each.
When the reader has produced several such FETCHes in a row, the session answers them
as one run (`fetch_run`): one look at the mailbox and one announce before the first,
the facts of all their messages in one store read (in slices of `FETCH_SLICE`; when
the run names at most `READ_WITH_NEWS` messages by UID, in the look at the mailbox), the
bodies in `read_many` batches of up to `BODY_BATCH_OCTETS`, and then each command's
FETCH responses followed by its own tagged answer, in order. A lone FETCH of a few
messages named by UID (`reads_with_news`: a client opening one message) is answered as
a run of its own, for that one look.

The client sees what it would have seen had it waited for each answer before sending
the next command: nothing a run's commands do changes the mailbox, and what other
sessions change meanwhile is told at the next command, as it may be. Only FETCHes
that set no \\Seen (PEEK, or a read-only mailbox), carry no CHANGEDSINCE or VANISHED
and cannot fail on a message (no BINARY) join a run; a sequence set out of range is
that command's BAD. When expunges are being held back (the first command numbers by
sequence, RFC 9051 §7.5.2) the run ends before a UID FETCH, which starts the next run
by telling them. A run takes at most `MAX_RUN` commands and holds at most
`FETCH_SLICE` messages' facts and `BODY_BATCH_OCTETS` of bodies (or one bigger body)
at a time, its responses written out as each batch is answered.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from poczta.imap import commands as cmd
from poczta.imap.encoder import Tagged, Untagged
from poczta.imap.fetch import BinarySize, BodySection, FetchAttribute
from poczta.imap.fetch_plan import plan_for
from poczta.imap.fetch_response import asks_item, needs_body, sets_seen
from poczta.imap.session.messages import (
    FETCH_SLICE,
    Asked,
    bodies_of,
    body_groups,
    condstore_enabled,
    encode_from_view,
    encode_group,
    kept_suffice,
    resolve_targets,
)
from poczta.imap.view import SelectedView
from poczta.store.base import MailboxId, MessageMeta, StoreError

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

__all__ = ["MAX_RUN", "fetch_run", "joins_run", "reads_with_news"]

MAX_RUN = 128  # commands answered as one run; those after wait for the next
READ_WITH_NEWS = 16  # messages named by UID whose facts are read with the mailbox's news


def joins_run(command: object, session: ImapSession) -> TypeGuard[cmd.Fetch]:
    """Whether `command` is a FETCH that may be answered as part of a run."""
    view = session.view
    if not isinstance(command, cmd.Fetch) or view is None or session.user is None:
        return False
    if command.changed_since is not None or command.vanished:
        return False
    attributes = command.attributes
    if sets_seen(attributes) and not view.read_only:
        return False
    return not any(
        isinstance(a, BinarySize) or (isinstance(a, BodySection) and a.binary) for a in attributes
    )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a command asks, the same for every command of the run asking alike."""

    asked: Asked
    from_view: bool  # the view has all it asks: the store is not read
    reads_body: bool
    modseq: bool  # MODSEQ is asked: CONDSTORE is on from this command


@dataclass(slots=True)
class _Turn:
    """One command of a run: its messages (or the text of its BAD) and what it asks."""

    command: cmd.Fetch
    uids: list[int] | str
    shape: _Shape


async def fetch_run(session: ImapSession, first: cmd.Fetch) -> None:
    """Answer `first` and the FETCHes right behind it that join the run."""
    from poczta.imap.session.selected import refresh, refresh_with_facts

    commands = [first]
    while len(commands) < MAX_RUN and session.pending and joins_run(session.pending[0], session):
        following = session.pending.pop(0)
        assert isinstance(following, cmd.Fetch)
        commands.append(following)
    session.bad_in_a_row = 0
    view = session.view
    assert view is not None
    shapes = _shapes(session, commands)
    needing = [shape.asked.plan for shape in shapes if not shape.from_view]
    named = _named_uids(commands) if needing else None
    read: _Read | None = None
    try:
        if named:  # the news and these messages' facts in one look
            kept_only = kept_suffice(session, needing)
            facts = await refresh_with_facts(session, view, named, kept_only=kept_only)
            read = _Read(frozenset(named), *facts)
        else:
            await refresh(session)
    except StoreError as exc:
        session.send(*(session.store_failure(command, exc) for command in commands))
        return
    session.send(*view.announce(allow_expunge=first.uid))
    turns = _turns(session, view, commands, shapes)
    await _answer(session, view, turns, read)


@dataclass(frozen=True, slots=True)
class _Read:
    """The facts (and such bodies as came with them) of the UIDs the run's commands
    name, read with the mailbox's news: those of them the store still has."""

    named: frozenset[int]
    metas: list[MessageMeta]
    bodies: Mapping[str, bytes]


def reads_with_news(command: cmd.Fetch) -> bool:
    """Whether a FETCH alone names so few messages by UID that, answered as a run of its
    own, their facts are read with the mailbox's news: one look at the store, not two."""
    return _named_uids([command]) is not None


def _named_uids(commands: Sequence[cmd.Fetch]) -> list[int] | None:
    """The UIDs the commands name, when each names its messages by UID (no `*`, no `$`)
    and they are at most `READ_WITH_NEWS`; else None."""
    named: set[int] = set()
    for command in commands:
        sequence = command.sequence
        if not command.uid or sequence.saved or sequence.uses_star:
            return None
        for first, last in sequence.ranges:
            low, high = min(first, last), max(first, last)
            if high - low >= READ_WITH_NEWS:
                return None
            named.update(range(low, high + 1))
        if len(named) > READ_WITH_NEWS:
            return None
    return sorted(named)


def _turns(
    session: ImapSession, view: SelectedView, commands: list[cmd.Fetch], shapes: list[_Shape]
) -> list[_Turn]:
    """The run's commands (with their `shapes`) resolved against the view; those after a
    cut go back to `session.pending`, to be read as the next run."""
    holding = view.expunges_held
    turns: list[_Turn] = []
    for command, shape in zip(commands, shapes, strict=True):
        if turns and holding and command.uid:
            session.more(list(commands[len(turns) :]))
            break
        targets = resolve_targets(session, command.sequence, command.uid)
        turns.append(_Turn(command, targets, shape))
    return turns


def _shapes(session: ImapSession, commands: list[cmd.Fetch]) -> list[_Shape]:
    """What each command asks; commands asking alike share one."""
    made: dict[tuple[bool, tuple[FetchAttribute, ...]], _Shape] = {}
    for command in commands:
        key = (command.uid, command.attributes)
        if key not in made:
            made[key] = _shape(session, command)
    return [made[(command.uid, command.attributes)] for command in commands]


def _shape(session: ImapSession, command: cmd.Fetch) -> _Shape:
    attributes = command.attributes
    plan = plan_for(attributes, with_uid=command.uid, utf8=session.utf8, seen_set=False)
    return _Shape(
        Asked(attributes, command.uid, False, plan),
        plan is not None and not plan.needs_facts,
        needs_body(attributes),
        asks_item(attributes, "MODSEQ"),
    )


# A message to answer: its command (index in the run), number, UID and facts (None
# when its command is answered from the view).
_Entry = tuple[int, int, int, MessageMeta | None]


async def _answer(
    session: ImapSession, view: SelectedView, turns: list[_Turn], read: _Read | None
) -> None:
    """Every turn's responses and tagged answer, in order; the messages read from the
    store a slice at a time."""
    wanted = [(k, uid) for k, turn in enumerate(turns) if isinstance(turn.uids, list)
              for uid in turn.uids]  # fmt: skip
    writer = _Writer(session, view, turns)
    for start in range(0, len(wanted), FETCH_SLICE):
        piece = wanted[start : start + FETCH_SLICE]
        try:
            entries, given = await _entries(session, view, turns, piece, read)
            for group in body_groups(entries, lambda e: _body_size(turns, e)):
                await writer.write(group, given)
        except StoreError as exc:
            writer.failed(exc)
            return
        if start + FETCH_SLICE < len(wanted):  # more to come: let the client take this first
            await session.conn.drain()
    writer.finish()


async def _entries(
    session: ImapSession,
    view: SelectedView,
    turns: list[_Turn],
    piece: list[tuple[int, int]],
    read: _Read | None,
) -> tuple[list[_Entry], Mapping[str, bytes]]:
    """The messages of `piece` to answer, with their facts read in one store read (a
    message the store has expunged meanwhile is left out, as a FETCH of it alone would),
    and such bodies as came with them."""
    asked = sorted({uid for k, uid in piece if not turns[k].shape.from_view})
    metas: dict[int, MessageMeta] = {}
    given: Mapping[str, bytes] = {}
    if asked and read is not None and read.named.issuperset(asked):
        metas = {meta.uid: meta for meta in read.metas}
        given = read.bodies
    elif asked:
        box = MailboxId(view.mailbox_id)
        plans = [turns[k].shape.asked.plan for k, _ in piece if not turns[k].shape.from_view]
        kept_only = kept_suffice(session, plans)
        if any(turns[k].shape.reads_body for k, _ in piece):
            found, given = await session.store.fetch_meta_with_bodies(
                box, asked, kept_only=kept_only
            )
        else:
            found = await session.store.fetch_meta(box, asked, kept_only=kept_only)
        metas = {meta.uid: meta for meta in found}
    entries: list[_Entry] = []
    for k, uid in piece:
        msn = view.msn(uid)
        if msn is None:
            continue
        if turns[k].shape.from_view:
            if not view.expunge_pending(uid):
                entries.append((k, msn, uid, None))
        elif (meta := metas.get(uid)) is not None:
            entries.append((k, msn, uid, meta))
    return entries, given


def _body_size(turns: list[_Turn], entry: _Entry) -> int:
    meta = entry[3]
    return meta.size if meta is not None and turns[entry[0]].shape.reads_body else 0


class _Writer:
    """Writes a run's answers in order: each turn's opening responses before its first
    message, its tagged answer after its last one (or where its messages would be)."""

    def __init__(self, session: ImapSession, view: SelectedView, turns: list[_Turn]) -> None:
        self.session, self.view, self.turns = session, view, turns
        self.begun = 0  # turns whose opening is written
        self.out: list[bytes] = []

    async def write(self, group: Sequence[_Entry], read: Mapping[str, bytes]) -> None:
        """Answer the messages of `group`, their bodies as `read` with their facts or
        read now in one store read."""
        session, turns = self.session, self.turns
        reading = [
            meta for k, _, _, meta in group if meta is not None and turns[k].shape.reads_body
        ]
        bodies = await bodies_of(session, reading, read) if reading else []
        given = iter(bodies)
        for k, span in _spans(group):
            self._begin(k)
            shape = turns[k].shape
            if shape.from_view:
                assert shape.asked.plan is not None
                self.out += encode_from_view(self.view, [e[2] for e in span], shape.asked.plan)
                continue
            numbered = [(msn, meta) for _, msn, _, meta in span if meta is not None]
            data = [next(given) if shape.reads_body else None for _ in numbered]
            failure = await encode_group(session, self.view, numbered, data, shape.asked, self.out)
            assert failure is None  # the commands that may fail are not run together
        self._flush()

    def finish(self) -> None:
        """The tagged answers of the turns not yet answered."""
        self._begin(len(self.turns))
        self._flush()

    def failed(self, exc: StoreError) -> None:
        """The store failed: what is written stays, the turns not yet answered are NO."""
        answered = max(self.begun - 1, 0)
        self._flush()
        self.session.send(*(self.session.store_failure(t.command, exc)
                            for t in self.turns[answered:]))  # fmt: skip

    def _begin(self, k: int) -> None:
        """Answer the turns before `k` and open turn `k`."""
        utf8 = self.session.utf8
        while self.begun <= k:
            if self.begun > 0:
                self.out.append(_done(self.turns[self.begun - 1]).encode(utf8))
            if self.begun < len(self.turns):
                self.out += [r.encode(utf8) for r in _opening(self.view, self.turns[self.begun])]
            self.begun += 1

    def _flush(self) -> None:
        if self.out:
            self.session.conn.write(b"".join(self.out))
            self.out.clear()


def _spans(group: Sequence[_Entry]) -> list[tuple[int, list[_Entry]]]:
    """`group` cut into the runs of entries of one turn each."""
    return [(k, list(span)) for k, span in itertools.groupby(group, key=lambda e: e[0])]


def _opening(view: SelectedView, turn: _Turn) -> list[Untagged]:
    """What a turn says before its messages: that CONDSTORE is on, when MODSEQ is asked."""
    if isinstance(turn.uids, str) or not turn.shape.modseq:
        return []
    return condstore_enabled(view)


def _done(turn: _Turn) -> Tagged:
    tag = turn.command.tag
    if isinstance(turn.uids, str):
        return Tagged(tag, "BAD", turn.uids)
    return Tagged(tag, "OK", "FETCH completed")

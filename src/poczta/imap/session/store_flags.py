"""STORE in a session: one command, or a run of STOREs the client pipelined.

A STORE goes through the store's flag update (UNCHANGEDSINCE answered with
[MODIFIED]); the new flags are told to this client unless .SILENT, and to every other
session at its next command.

Each flag change is durable before it is answered, which costs a commit and an fsync.
When a client pipelines STOREs (a client marking many messages one command at a time)
the session takes the whole run of STOREs it has read at once (`StoreRun`): it
resolves each command's messages against the view, hands all the flag changes to the
store together, so that they share one group commit (`poczta.store.sqlite.writer`),
and answers every command in order once they are committed, exactly as if they had
run one after another: the store runs the changes in command order, and nothing else
is told between them. While a run waits for its commit the session goes on reading,
and further STOREs become a run of their own whose changes join the next commit
(group commit across the commands in flight; anything else waits for the answers).
The view is brought up to date once, by the last run answered (the commands' own
changes are not told twice), and what other sessions changed meanwhile is told before
its last OK (when the store cannot say, at the next command: the changes are made,
the answers are OK).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.encoder import Code, Tagged
from poczta.imap.fetch import FetchItem
from poczta.imap.fetch_plan import plan_for
from poczta.imap.sequence import compact
from poczta.imap.session.append import FLAGS_TOO_LONG
from poczta.imap.session.messages import condstore_enabled, resolve_targets
from poczta.imap.view import SelectedView
from poczta.store.base import (
    FlagMode,
    FlagResult,
    MailboxId,
    StoreError,
    flags_fit,
    normalize_flags,
)

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

__all__ = ["StoreRun", "store_flags"]

_MODES = {cmd.StoreMode.ADD: FlagMode.ADD, cmd.StoreMode.REMOVE: FlagMode.REMOVE,
          cmd.StoreMode.REPLACE: FlagMode.REPLACE}  # fmt: skip
_TOLD = (FetchItem("FLAGS"), FetchItem("MODSEQ"))  # a STORE's FETCH (MODSEQ when the view has it)


@dataclass
class _Answer:
    """One command's responses, sent when its turn comes."""

    command: cmd.Store
    uids: list[int] | None = None  # the messages to change; None: answered already
    responses: tuple[bytes, ...] = ()  # on the wire, the tagged answer last


async def store_flags(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Store)
    await StoreRun(session, [command], announce=True).answer(session, last=True)


class StoreRun:
    """STORE commands whose flag changes are with the store, answered once committed.

    Made, it resolves each command's messages and hands every change to the store at
    once; `answer` waits for the commit and answers the commands in order. The session
    may make further runs before answering this one (commands the client pipelined
    meanwhile): their changes then go into the next group commit, and the runs are
    answered in the order they were made. Only the `last` of them brings the view up
    to date and tells what other sessions changed; when the changes of the runs are
    all that changed the mailbox (`SelectedView.caught_up`), the store is not asked.
    """

    def __init__(self, session: ImapSession, commands: Sequence[cmd.Store], *, announce: bool):
        view = session.view
        assert view is not None
        self.uid_form = all(command.uid for command in commands)
        if announce:
            session.send(*view.announce(allow_expunge=self.uid_form))
        self.answers = [_prepare(session, command) for command in commands]
        self._changing = [a for a in self.answers if a.uids is not None]
        self.committed = asyncio.gather(
            *(
                session.store.set_flags(
                    MailboxId(view.mailbox_id),
                    answer.uids or [],
                    normalize_flags(answer.command.flags),
                    _MODES[answer.command.mode],
                    answer.command.unchanged_since,
                )
                for answer in self._changing
            ),
            return_exceptions=True,
        )

    async def answer(self, session: ImapSession, *, last: bool) -> None:
        results = await self.committed
        view = session.view
        assert view is not None
        own = [(r.highestmodseq, bool(r.changed)) for r in results if isinstance(r, FlagResult)]
        caught_up = len(own) == len(results) and view.caught_up(own)
        if last and not caught_up:  # others changed the mailbox too: ask what
            from poczta.imap.session.selected import refresh

            with contextlib.suppress(StoreError):  # the changes are made: news can wait
                await refresh(session)
        utf8 = session.utf8
        for answer, result in zip(self._changing, results, strict=True):
            if isinstance(result, Exception):
                answer.responses = (session.store_failure(answer.command, result).encode(utf8),)
            elif isinstance(result, BaseException):
                raise result
            else:
                answer.responses = _told(session, answer.command, result)
        *earlier, final = self.answers
        out = [wire for answer in earlier for wire in answer.responses]
        out += final.responses[:-1]
        if last:
            out += [news.encode(utf8) for news in session.updates(allow_expunge=self.uid_form)]
        out += final.responses[-1:]
        session.conn.write(b"".join(out))


def _prepare(session: ImapSession, command: cmd.Store) -> _Answer:
    """The messages a command changes, or its answer when it changes none."""
    assert session.view is not None
    if session.view.read_only:
        refused = Tagged(command.tag, "NO", "The mailbox is read-only", "READ-ONLY")
        return _Answer(command, None, (refused.encode(session.utf8),))
    uids = resolve_targets(session, command.sequence, command.uid)
    if isinstance(uids, str):
        return _Answer(command, None, (Tagged(command.tag, "BAD", uids).encode(session.utf8),))
    if _too_long(session.view, command, uids):
        refused = Tagged(command.tag, "NO", FLAGS_TOO_LONG, "LIMIT")
        return _Answer(command, None, (refused.encode(session.utf8),))
    return _Answer(command, uids)


def _too_long(view: SelectedView, command: cmd.Store, uids: Sequence[int]) -> bool:
    """Whether the command would leave a message with more flags than the store keeps."""
    flags = normalize_flags(command.flags)
    if command.mode is cmd.StoreMode.REMOVE:
        return False
    if command.mode is cmd.StoreMode.REPLACE:
        return not flags_fit(flags)
    return not all(flags_fit(view.flags.get(uid, frozenset()) | flags) for uid in uids)


def _told(session: ImapSession, command: cmd.Store, result: FlagResult) -> tuple[bytes, ...]:
    """The view takes in a command's changes; its responses, the tagged OK last."""
    view = session.view
    assert view is not None
    utf8 = session.utf8
    news = condstore_enabled(view) if command.unchanged_since is not None else []
    plan = None
    if not command.silent or command.unchanged_since is not None:
        plan = plan_for(_TOLD, with_uid=command.uid or view.qresync, utf8=utf8, seen_set=False)
        assert plan is not None
    out: list[bytes] = []
    for uid, new_flags, modseq in result.changed:
        view.told(uid, new_flags, modseq)
        if plan is not None and (msn := view.msn(uid)) is not None:
            out.append(plan.encode(msn, uid, None, view.flag_items(uid)) or b"")
    code = None
    if result.modified:
        numbers = result.modified if command.uid else [view.msn(u) or 0 for u in result.modified]
        code = Code.modified(compact(numbers))
    done = Tagged(command.tag, "OK", "STORE completed", code)
    told = [response.encode(utf8) for response in (*news, *view.keyword_news())]
    return (*told, *out, done.encode(utf8))

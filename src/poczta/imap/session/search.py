"""SEARCH, SORT and THREAD in a session: the cached facts of the selected mailbox through
the pure evaluator (`poczta.imap.search_eval`, `sort`, `thread`), answered as SEARCH,
ESEARCH (RFC 4731, with SAVE for `$`, RFC 5182), SORT, ESORT or THREAD.

The facts come from one store read of the mailbox, kept and brought up to date from
the view (`search_facts`). BODY and TEXT need the messages'
text: the evaluator then runs on a thread, asking for a message's bytes only when the
cheaper keys leave it undecided, so a body search of a large mailbox does not block the
event loop. The bytes are read on the loop up to `READ_AHEAD` messages at a time (the
messages after the one asked for; those the cheaper keys then decide are read for
nothing, which costs less than a trip to the loop per message), and the loop reads the
next batch while the evaluator searches the one it has, so reading and searching overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from poczta.imap import commands as cmd
from poczta.imap.body_search import MessageText
from poczta.imap.encoder import Code, Thread, ThreadData, Untagged, search_data, sort_data
from poczta.imap.esearch import esearch_response, search_return
from poczta.imap.search import AndKey
from poczta.imap.search_eval import (
    SearchableMessage,
    SearchableText,
    SearchContext,
    evaluate,
    flags_test,
    highest_modseq,
    needs_body,
    uids_of,
    uses_modseq,
)
from poczta.imap.session.search_facts import search_facts
from poczta.imap.sort import sort_numbers
from poczta.imap.thread import thread_numbers

if TYPE_CHECKING:
    from poczta.imap.session.core import ImapSession

# Bodies a body search reads per trip to the event loop (at most, and at most so many
# octets): the evaluator asks for them in sequence order, and each trip costs two thread
# switches, more than reading and searching a message.
READ_AHEAD = 256
READ_AHEAD_OCTETS = 4 * 1024 * 1024


async def _messages(session: ImapSession) -> list[SearchableMessage]:
    """The selected mailbox's messages in this client's sequence-number order."""
    assert session.view is not None
    return (await search_facts(session)).ordered(session.view.uids)


async def _matching(
    session: ImapSession, criteria: AndKey, messages: list[SearchableMessage]
) -> list[int]:
    """Sequence numbers of the messages matching `criteria`."""
    assert session.view is not None
    recent = frozenset(session.view.recent)
    context = SearchContext(datetime.now(UTC), frozenset(session.saved_search), recent)
    on_flags = flags_test(criteria, context)
    facts = session.search_cache
    if on_flags is not None and facts is not None and facts.holds(messages):
        return facts.numbers_with(on_flags)
    if not needs_body(criteria):
        return evaluate(criteria, messages, context)
    loop = asyncio.get_running_loop()
    store = session.store
    bodies: dict[int, bytes | None] = {}  # read ahead, by sequence number (None: no body)
    coming: list[Future[dict[int, bytes | None]]] = []  # the next batch, being read

    async def read(numbers: range) -> dict[int, bytes | None]:
        found: dict[int, bytes | None] = dict.fromkeys(numbers)
        stored = [(n, getattr(messages[n - 1], "digest", "")) for n in numbers]
        stored = [(n, digest) for n, digest in stored if digest]
        asked = [(digest, messages[n - 1].size) for n, digest in stored]
        for (number, _), data in zip(stored, await store.blobs.read_many(asked), strict=True):
            found[number] = data
        return found

    def read_from(number: int) -> Future[dict[int, bytes | None]]:
        ahead = range(number, _read_ahead_end(messages, number))
        return asyncio.run_coroutine_threadsafe(read(ahead), loop)

    def text(number: int) -> SearchableText:
        if number not in bodies:
            bodies.clear()  # what was read ahead and not asked for is not needed
            if coming:
                bodies.update(coming.pop().result())
            if number not in bodies:
                bodies.update(read_from(number).result())
            # The loop reads the next batch while this thread searches this one.
            following = max(bodies) + 1
            if following <= len(messages):
                coming.append(read_from(following))
        data = bodies.pop(number, None)
        return MessageText(data if data is not None else b"")

    try:
        return await asyncio.to_thread(evaluate, criteria, messages, context, text)
    finally:
        for batch in coming:
            batch.cancel()


def _read_ahead_end(messages: list[SearchableMessage], number: int) -> int:
    """The sequence number after the last body to read with that of `number`."""
    end, octets = number, 0
    while end <= len(messages) and end < number + READ_AHEAD and octets < READ_AHEAD_OCTETS:
        octets += messages[end - 1].size
        end += 1
    return end


def _note_condstore(session: ImapSession, criteria: AndKey) -> None:
    view = session.view
    if view is not None and uses_modseq(criteria) and not view.condstore:
        view.condstore = True
        session.send(
            Untagged("OK", "CONDSTORE enabled", Code.number("HIGHESTMODSEQ", view.highestmodseq))
        )


async def run_search(session: ImapSession, command: cmd.Search) -> None:
    view = session.view
    assert view is not None
    session.send(*view.announce(allow_expunge=command.uid))
    _note_condstore(session, command.criteria)
    messages = await _messages(session)
    numbers = await _matching(session, command.criteria, messages)
    modseq = highest_modseq(numbers, messages) if uses_modseq(command.criteria) else None
    answer = uids_of(numbers, messages) if command.uid else numbers
    if command.return_options is None:
        session.send(search_data(answer, modseq))
    else:
        result = search_return(answer, command.return_options)
        if result.saved is not None:
            saved = set(result.saved)
            session.saved_search = [
                m.uid for n, m in enumerate(messages, 1) if (m.uid if command.uid else n) in saved
            ]
        if modseq is not None and not {"ALL", "COUNT"} & set(command.return_options or ("ALL",)):
            # RFC 7162 §3.1.5: the highest MODSEQ of the messages the answer names
            reported = [n for n in (result.minimum, result.maximum) if n is not None]
            named = [numbers[answer.index(n)] for n in reported]
            modseq = highest_modseq(named, messages)
        response = esearch_response(command.tag, result, uid=command.uid, modseq=modseq)
        if response is not None:
            session.send(response)
    await _done(session, command.tag, "SEARCH completed", command.uid)


async def run_sort(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Sort)
    view = session.view
    assert view is not None
    session.send(*view.announce(allow_expunge=command.uid))
    messages = await _messages(session)
    numbers = sort_numbers(
        command.keys, await _matching(session, command.criteria, messages), messages
    )
    answer = uids_of(numbers, messages) if command.uid else numbers
    if command.return_options is None:
        session.send(sort_data(answer))
    else:
        response = esearch_response(
            command.tag,
            search_return(answer, command.return_options, ordered=True),
            uid=command.uid,
        )
        if response is not None:
            session.send(response)
    await _done(session, command.tag, "SORT completed", command.uid)


async def run_thread(session: ImapSession, command: cmd.Command) -> None:
    assert isinstance(command, cmd.Thread)
    view = session.view
    assert view is not None
    session.send(*view.announce(allow_expunge=command.uid))
    messages = await _messages(session)
    numbers = await _matching(session, command.criteria, messages)
    threads = thread_numbers(command.algorithm, numbers, messages)
    if command.uid:
        threads = _as_uids(threads, messages)
    session.send(ThreadData(threads))
    await _done(session, command.tag, "THREAD completed", command.uid)


def _as_uids(threads: Sequence[Thread], messages: list[SearchableMessage]) -> list[Thread]:
    out: list[Thread] = []
    for node in threads:
        out.append(
            [
                messages[i - 1].uid if isinstance(i, int) else _as_uids([i], messages)[0]
                for i in node
            ]
        )
    return out


async def _done(session: ImapSession, tag: str, text: str, uid_form: bool) -> None:
    from poczta.imap.session.messages import _finish

    # A search changes nothing: what others changed is told at the next command, as the
    # check before this one told what they had changed until then.
    await _finish(session, tag, text, uid_form, refresh=False)

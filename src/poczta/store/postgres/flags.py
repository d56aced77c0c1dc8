"""Flag changes (IMAP STORE) in the PostgreSQL store: the changes of one mailbox that wait
at once, made together in two statements, no BEGIN or COMMIT; one commit for them all.

A session hands the store the changes of the STOREs a client pipelined all at once, to
be made in command order (`poczta.imap.session.store_flags`); made one after another,
each would be a commit and a WAL flush of its own. So this process keeps the changes
asked of a mailbox in a queue (`FlagBatches`): the first goes at once, and those asked
while it is being made go together next, like the deliveries of `batch`. A batch is
made as if its changes ran one after another in the order asked: each sees what the
earlier ones wrote, takes a MODSEQ of its own when it writes (UNCHANGEDSINCE compares
with those) and gets its own answer (`FlagResult`); one notification tells the change
feed of them all.

What to write is decided by `flag_changes`, the one rule of both backends, from the
messages as a first statement reads them (`_read`, no lock). The second (`_WRITE_IF`)
is the change itself, its own transaction: it locks the mailbox's row where it still
has the HIGHESTMODSEQ that was read, then those messages only where each still has the
MODSEQ that was read, and when all do, writes the new HIGHESTMODSEQ, every changed
message and notifies the change feed. A mailbox or message changed in between leaves
that statement without effect (nothing written); the batch is then made in one
transaction that locks before it reads (`_locked_batch`). So a batch usually costs two
round trips, and one that changes nothing (+FLAGS of a flag the messages have) one.

Other processes' changes are ordered by the locks below. Why the locking statements read
the newest rows: under READ COMMITTED a statement reads from the snapshot taken when it
started, so a plain read that first waited for the mailbox's lock would see the messages
as they were before the writer it waited for. The rows are therefore locked too (`FOR
UPDATE`): a row another transaction changed since the snapshot is then read in its
newest version (and fails the HIGHESTMODSEQ or MODSEQ test), and one it deleted is left
out. Every lock of a message waits for the mailbox's row first (the message rows are
joined to it), so the order of locks stays every writer's: the mailbox, then its
messages (see `mailboxes`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from poczta.store.base import FlagMode, FlagResult, LimitExceeded, NotFound, normalize_flags
from poczta.store.flag_changes import flag_changes
from poczta.store.postgres.access import Connection, Database
from poczta.store.postgres.batch import tell_waiters
from poczta.store.postgres.mailboxes import CHANGES_CHANNEL

__all__ = ["FEW_UIDS", "MAX_BATCH_UIDS", "FlagBatches", "FlagChange", "change_flags"]

MAX_BATCH_UIDS = 10_000  # distinct messages one batch reads and writes, beyond its first change

# The messages of a batch, looked up one by one by key (a batch of a few, as a client's
# STORE of one message at a time makes) or read in one pass over the mailbox's MODSEQ
# index, which holds UID and flags too (a batch of many). The lookups are spelled out
# (LIMIT keeps the subquery from being folded into a join) because the prepared
# statement's generic plan would otherwise scan the whole mailbox for a few UIDs: it
# costs `mailbox_id = $1` for a typical mailbox, and next to one 10,000-message INBOX
# a typical mailbox is small. One message (the commonest STORE) is one key, whose
# generic plan is that lookup and is kept: no planning on every call.
FEW_UIDS = 100
_LOOKUP = (
    "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1 AND uid = $2::bigint{lock}"
)
_LOOKUPS = (
    "SELECT x.uid, x.flags, x.modseq FROM unnest($2::bigint[]) AS u(uid) CROSS JOIN LATERAL"
    " (SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1 AND uid = u.uid"
    " LIMIT 1{lock}) x"
)
_PASS = (
    "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = $1"
    " AND uid = ANY($2::bigint[]){lock}"
)


def _read(uids: Sequence[int], *, lock: bool) -> tuple[str, object]:
    """The statement reading HIGHESTMODSEQ and the messages `uids`, locked or not, and
    its argument for them."""
    shape = _LOOKUP if len(uids) == 1 else _LOOKUPS if len(uids) <= FEW_UIDS else _PASS
    messages = shape.format(lock=" FOR UPDATE" if lock else "")
    argument: object = uids[0] if len(uids) == 1 else list(uids)
    if not lock:
        return (
            "SELECT b.highestmodseq, m.uid, m.flags, m.modseq FROM mailboxes b LEFT JOIN"
            f" LATERAL ({messages}) m ON true WHERE b.id = $1 ORDER BY m.uid"
        ), argument
    return (
        "WITH box AS (SELECT highestmodseq FROM mailboxes WHERE id = $1 FOR UPDATE)"
        " SELECT box.highestmodseq, m.uid, m.flags, m.modseq FROM box LEFT JOIN LATERAL"
        f" ({messages}) m ON true ORDER BY m.uid"
    ), argument


# $1 mailbox, $2 the messages' new flags and MODSEQs as JSON [{uid, flags, modseq}], $3
# the new HIGHESTMODSEQ; with $4, $5, $6 (the UIDs, MODSEQs and HIGHESTMODSEQ read) the
# statement writes only if they are all still so, and returns NULL otherwise.
_WRITE_NEW = (
    " taken AS (UPDATE mailboxes SET highestmodseq = $3 WHERE id = $1{guard}"
    f" RETURNING highestmodseq, pg_notify('{CHANGES_CHANNEL}', id::text)),"
    " written AS (UPDATE messages m SET flags = c.flags, modseq = c.modseq"
    " FROM taken, jsonb_to_recordset($2::jsonb) AS c(uid bigint, flags text[], modseq bigint)"
    " WHERE m.mailbox_id = $1 AND m.uid = c.uid AND m.uid = ANY({uids}))"
    " SELECT (SELECT highestmodseq FROM taken)"
)
# The changed UIDs again, as an array: the planner takes the changes' JSON for 100 rows
# and would scan the whole mailbox for them; with the array it looks up each by its key.
_CHANGED_UIDS = "ARRAY(SELECT (e ->> 'uid')::bigint FROM jsonb_array_elements($2::jsonb) e)"
_WRITE_IF = (
    "WITH box AS (SELECT id FROM mailboxes WHERE id = $1 AND highestmodseq = $6 FOR UPDATE),"
    " unchanged AS (SELECT m.uid FROM box JOIN messages m ON m.mailbox_id = box.id"
    " JOIN unnest($4::bigint[], $5::bigint[]) AS r(uid, modseq)"
    " ON m.uid = r.uid AND m.modseq = r.modseq FOR UPDATE OF m),"
    + _WRITE_NEW.format(
        guard=" AND EXISTS (SELECT 1 FROM box)"
        " AND (SELECT count(*) FROM unchanged) = cardinality($4)",
        uids=_CHANGED_UIDS,
    )
)
_WRITE = "WITH" + _WRITE_NEW.format(guard="", uids=_CHANGED_UIDS)

Rows = list[tuple[int, frozenset[str], int]]


@dataclass(frozen=True, slots=True)
class FlagChange:
    """One `set_flags` call: its messages, the flags (normalized) and how to apply them."""

    uids: Sequence[int]
    flags: frozenset[str]
    mode: FlagMode
    unchangedsince: int | None


@dataclass(slots=True)
class _Outcome:
    """A batch worked out on the rows read: each change's answer and what to write."""

    results: list[FlagResult] = field(default_factory=list)
    written: dict[int, tuple[frozenset[str], int]] = field(default_factory=dict)
    highest: int = 0

    def as_json(self) -> str:
        items = self.written.items()
        return json.dumps([{"uid": u, "flags": sorted(f), "modseq": m} for u, (f, m) in items])


def _rows(found: Sequence[Any], mailbox_id: int) -> tuple[int, Rows]:
    """(HIGHESTMODSEQ, the messages' (uid, flags, modseq)) of `_read`'s answer."""
    if not found:
        raise NotFound(f"no mailbox {mailbox_id}")
    rows = [(int(r[1]), frozenset(r[2]), int(r[3])) for r in found if r[1] is not None]
    return int(found[0][0]), rows


def _outcome(changes: Sequence[FlagChange], highest: int, rows: Rows) -> _Outcome:
    """Each change applied in turn to `rows` as the earlier ones left them, the ones that
    write taking the MODSEQs after `highest` one by one."""
    now = {uid: (flags, modseq) for uid, flags, modseq in rows}
    outcome = _Outcome(highest=highest)
    for change in changes:
        mine = [(uid, *now[uid]) for uid in sorted(set(change.uids)) if uid in now]
        modified, updates = flag_changes(mine, change.flags, change.mode, change.unchangedsince)
        if not updates:
            outcome.results.append(FlagResult((), tuple(modified), outcome.highest))
            continue
        outcome.highest += 1
        for uid, new in updates:
            now[uid] = outcome.written[uid] = (new, outcome.highest)
        changed = tuple((uid, new, outcome.highest) for uid, new in updates)
        outcome.results.append(FlagResult(changed, tuple(modified), outcome.highest))
    return outcome


def _all_uids(changes: Sequence[FlagChange]) -> list[int]:
    return sorted({uid for change in changes for uid in change.uids})


async def change_flags(
    db: Database, mailbox_id: int, changes: Sequence[FlagChange]
) -> list[FlagResult]:
    """Make `changes` to the mailbox's messages as if one after another, in one commit:
    each one's answer (see `MailStore.set_flags`)."""
    uids = _all_uids(changes)
    read, argument = _read(uids, lock=False)
    found = await db.statement(lambda c: c.fetch(read, mailbox_id, argument))
    highest, rows = _rows(found, mailbox_id)
    outcome = _outcome(changes, highest, rows)
    if not outcome.written:
        return outcome.results
    guard = ([r[0] for r in rows], [r[2] for r in rows], highest)  # the UIDs, MODSEQs read
    new = (outcome.as_json(), outcome.highest)
    written = await db.statement(lambda c: c.fetchval(_WRITE_IF, mailbox_id, *new, *guard))
    if written is not None:
        return outcome.results
    return await db.write(lambda c: _locked_batch(c, mailbox_id, changes, uids))


async def _locked_batch(
    conn: Connection, mailbox_id: int, changes: Sequence[FlagChange], uids: list[int]
) -> list[FlagResult]:
    """The batch in one transaction that locks the mailbox and its messages first."""
    read, argument = _read(uids, lock=True)
    highest, rows = _rows(await conn.fetch(read, mailbox_id, argument), mailbox_id)
    outcome = _outcome(changes, highest, rows)
    if outcome.written:
        await conn.fetchval(_WRITE, mailbox_id, outcome.as_json(), outcome.highest)
    return outcome.results


class FlagBatches:
    """The flag changes of this process waiting per mailbox, and the task making each
    mailbox's: in the order asked, those waiting together in one batch."""

    def __init__(self, db: Database, max_uids: int = MAX_BATCH_UIDS) -> None:
        self._db = db
        self._max_uids = max_uids
        self._waiting: dict[int, list[tuple[FlagChange, asyncio.Future[FlagResult]]]] = {}
        self._makers: dict[int, asyncio.Task[None]] = {}

    async def set_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        flags: frozenset[str],
        mode: FlagMode,
        unchangedsince: int | None,
    ) -> FlagResult:
        """Change the flags of `uids` by `mode` (see `MailStore.set_flags`), after the
        changes of this mailbox asked before."""
        change = FlagChange(uids, normalize_flags(flags), mode, unchangedsince)
        future: asyncio.Future[FlagResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(mailbox_id, []).append((change, future))
        if mailbox_id not in self._makers:
            self._makers[mailbox_id] = asyncio.ensure_future(self._make_all(mailbox_id))
        return await future

    async def _make_all(self, mailbox_id: int) -> None:
        try:
            while self._waiting.get(mailbox_id):
                batch = self._next_batch(mailbox_id)
                try:
                    results: Sequence[FlagResult | BaseException] = await change_flags(
                        self._db, mailbox_id, [change for change, _ in batch]
                    )
                except LimitExceeded:  # one change's flags too long: each goes on its own
                    results = [await self._alone(mailbox_id, change) for change, _ in batch]
                except BaseException as exc:  # the database unreachable, the mailbox gone...
                    tell_waiters(batch, [exc] * len(batch))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                tell_waiters(batch, results)
        finally:
            del self._makers[mailbox_id]
            for _, future in self._waiting.pop(mailbox_id, []):  # only when cancelled
                future.cancel()

    async def _alone(self, mailbox_id: int, change: FlagChange) -> FlagResult | BaseException:
        try:
            return (await change_flags(self._db, mailbox_id, [change]))[0]
        except Exception as exc:
            return exc

    def _next_batch(self, mailbox_id: int) -> list[tuple[FlagChange, asyncio.Future[FlagResult]]]:
        """The first waiting changes, up to `max_uids` distinct messages (at least one)."""
        waiting = self._waiting[mailbox_id]
        seen: set[int] = set()
        count = 0
        for change, _ in waiting:
            seen.update(change.uids)
            if count and len(seen) > self._max_uids:
                break
            count += 1
        batch, self._waiting[mailbox_id] = waiting[:count], waiting[count:]
        return batch

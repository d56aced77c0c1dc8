"""Mailboxes, messages and their blob references in the SQLite store.

Plain synchronous functions on a connection: the `*_job` factories return writer jobs
(run inside the writer's batch transaction), the others read on a reader connection.

Every change to a mailbox's messages takes the next MODSEQ of that mailbox: a delivery
one per message, a flag change one per call (shared by the messages it changed),
an expunge one per call (kept with the expunged UIDs for VANISHED).
Blob references are counted and released by `poczta.store.sqlite.blob_refs`; the queue
entry of a message's remote recipients is written by `poczta.store.sqlite.queue`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from poczta.store.base import (
    Accepted,
    AlreadyExists,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    MailboxId,
    MailboxState,
    MessageMeta,
    MessageSummary,
    NotFound,
    Outbound,
    StoreError,
    UserId,
    normalize_flags,
)
from poczta.store.codec import (
    PARSE_NOT_READ,
    MessageColumns,
    StoredParse,
    decode_flags,
    decode_time,
    encode_flags,
    stored_parse,
)
from poczta.store.flag_changes import flag_changes
from poczta.store.names import mailbox_name
from poczta.store.sqlite.blob_refs import add_blob_ref, release_blobs
from poczta.store.sqlite.queue import insert_queue
from poczta.store.sqlite.writer import Job, JobContext

_MAILBOX_STATE = (
    "SELECT id, user_id, name, uidvalidity, uidnext, highestmodseq, special_use, messages"
    " FROM mailboxes"
)
_META_COLUMNS = (
    "uid, modseq, flags, internal_date, size, digest, header_size, sent_date, subject,"
    " envelope, headers, structure, imap_envelope, imap_bodystructure"
)
# What a FETCH answered from the kept texts needs (`fetch_meta`'s kept_only): not the
# envelope, search headers and structure, half of what a row's facts take to read.
_KEPT_COLUMNS = (
    "uid, modseq, flags, internal_date, size, digest, header_size, sent_date, subject,"
    " imap_envelope, imap_bodystructure"
)
_UIDS = "uid IN (SELECT value FROM json_each(?))"
_LISTED_UIDS = 16  # up to this many UIDs are bound one by one, more as one JSON array


def uid_condition(uids: Sequence[int]) -> tuple[str, tuple[int | str, ...]]:
    """`uid IN (...)` for a WHERE clause, and its values: a few UIDs bound one by one
    (the common STORE of one message), many as a JSON array (one value to bind)."""
    if len(uids) <= _LISTED_UIDS:
        return f"uid IN ({', '.join('?' * len(uids))})", tuple(uids)
    return _UIDS, (json.dumps(list(uids)),)


def _state(row: tuple[int, int, str, int, int, int, str | None, int]) -> MailboxState:
    return MailboxState(
        MailboxId(row[0]), UserId(row[1]), row[2], row[3], row[4], row[5], row[6], row[7]
    )


def list_mailboxes(conn: sqlite3.Connection, user_id: int) -> list[MailboxState]:
    rows = conn.execute(f"{_MAILBOX_STATE} WHERE user_id = ? ORDER BY name", (user_id,))
    return [_state(r) for r in rows]


def get_mailbox(conn: sqlite3.Connection, user_id: int, name: str) -> MailboxState:
    name = mailbox_name(name)
    row = conn.execute(f"{_MAILBOX_STATE} WHERE user_id = ? AND name = ?", (user_id, name))
    found = row.fetchone()
    if found is None:
        raise NotFound(f"no mailbox {name}")
    return _state(found)


def next_uidvalidity(conn: sqlite3.Connection) -> int:
    """A UIDVALIDITY never given before: the clock, or one more than the last one."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'last_uidvalidity'").fetchone()
    value = max(int(time.time()), int(row[0]) + 1 if row else 0)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('last_uidvalidity', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(value),),
    )
    return value


def create_mailbox_row(
    conn: sqlite3.Connection, user_id: int, name: str, special_use: str | None
) -> int:
    try:
        cursor = conn.execute(
            "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES (?, ?, ?, ?)",
            (user_id, name, special_use, next_uidvalidity(conn)),
        )
    except sqlite3.IntegrityError as exc:
        raise AlreadyExists(f"mailbox {name} exists") from exc
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _create_superiors(conn: sqlite3.Connection, user_id: int, name: str) -> None:
    """The missing superiors of `name` created, as CREATE and RENAME do (RFC 9051 6.3.4,
    6.3.6): "a" and "a/b" for "a/b/c"."""
    parts = name.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        exists = conn.execute(
            "SELECT 1 FROM mailboxes WHERE user_id = ? AND name = ?", (user_id, parent)
        ).fetchone()
        if exists is None:
            create_mailbox_row(conn, user_id, parent, None)


def create_mailbox_job(user_id: int, name: str, special_use: str | None) -> Job:
    name = mailbox_name(name)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> MailboxState:
        if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
            raise NotFound(f"no user {user_id}")
        _create_superiors(conn, user_id, name)
        create_mailbox_row(conn, user_id, name, special_use)
        return get_mailbox(conn, user_id, name)

    return job


def delete_mailbox_job(user_id: int, name: str) -> Job:
    name = mailbox_name(name)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if name == "INBOX":
            raise StoreError("INBOX cannot be deleted")
        box = get_mailbox(conn, user_id, name)
        digests = conn.execute(
            "SELECT digest, count(*) FROM messages WHERE mailbox_id = ? GROUP BY digest",
            (box.id,),
        ).fetchall()
        conn.execute("DELETE FROM mailboxes WHERE id = ?", (box.id,))
        release_blobs(conn, ctx, digests)

    return job


def rename_mailbox_job(user_id: int, old: str, new: str) -> Job:
    old, new = mailbox_name(old), mailbox_name(new)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if old == "INBOX" or new == "INBOX":
            raise StoreError("renaming INBOX is not supported")
        get_mailbox(conn, user_id, old)
        names = dict(
            conn.execute("SELECT id, name FROM mailboxes WHERE user_id = ?", (user_id,)).fetchall()
        )
        if new in names.values():
            raise AlreadyExists(f"mailbox {new} exists")
        renamed = {
            box_id: new + name[len(old) :]
            for box_id, name in names.items()
            if name == old or name.startswith(old + "/")
        }
        # An inferior may land on a mailbox that stays: "A/x" on "B/x" left without its "B".
        staying = {name for box_id, name in names.items() if box_id not in renamed}
        taken = sorted(staying.intersection(renamed.values()))
        if taken:
            raise AlreadyExists(f"mailbox {taken[0]} exists")
        # In two steps: the unique key is checked row by row, and within one hierarchy (P/Q
        # to P, or P to P/Q) a new name may be the old name of a row not renamed yet. No
        # valid name starts with "/", so the names in between are free.
        for box_id in renamed:
            conn.execute("UPDATE mailboxes SET name = '/' || id WHERE id = ?", (box_id,))
        for box_id, name in renamed.items():
            conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (name, box_id))
        # After the move: renaming "a" to "a/b" takes "a" away, and then makes it anew.
        _create_superiors(conn, user_id, new)

    return job


# --- messages --------------------------------------------------------------


def _target_mailbox(conn: sqlite3.Connection, target: DeliveryTarget) -> int:
    if target.mailbox.startswith("\\"):
        row = conn.execute(
            "SELECT id FROM mailboxes WHERE user_id = ? AND special_use = ? ORDER BY id LIMIT 1",
            (target.user_id, target.mailbox),
        ).fetchone()
        name = "INBOX"  # a special-use mailbox the user removed: deliver to INBOX
    else:
        row, name = None, mailbox_name(target.mailbox)
    if row is None:
        row = conn.execute(
            "SELECT id FROM mailboxes WHERE user_id = ? AND name = ?", (target.user_id, name)
        ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {target.mailbox} for user {target.user_id}")
    return int(row[0])


def _bump(conn: sqlite3.Connection, mailbox_id: int, uids: int) -> tuple[int, int]:
    """Take `uids` new UIDs (maybe 0) and the next modseq; return (first uid, modseq)."""
    row = conn.execute(
        "UPDATE mailboxes SET uidnext = uidnext + ?, highestmodseq = highestmodseq + 1"
        " WHERE id = ? RETURNING uidnext - ?, highestmodseq",
        (uids, mailbox_id, uids),
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(row[0]), int(row[1])


def _take_uid(conn: sqlite3.Connection, target: DeliveryTarget) -> tuple[int, int, int]:
    """The target mailbox's id, a new UID in it and its next modseq."""
    if target.mailbox == "INBOX":  # most deliveries: find and bump in one statement
        row = conn.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
            " WHERE user_id = ? AND name = 'INBOX' RETURNING id, uidnext - 1, highestmodseq",
            (target.user_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no mailbox INBOX for user {target.user_id}")
        return int(row[0]), int(row[1]), int(row[2])
    mailbox_id = _target_mailbox(conn, target)
    uid, modseq = _bump(conn, mailbox_id, 1)
    return mailbox_id, uid, modseq


def deliver_job(
    digest: str,
    size: int,
    data: bytes | None,
    columns: MessageColumns,
    internal_date: str,
    targets: Sequence[DeliveryTarget],
    outbound: Outbound | None,
) -> Job:
    """Store one message for `targets` and queue it for `outbound`.

    `data` may be None when the body is staged in this batch (the committer process is
    sent no bytes); an unstaged body whose file has since gone then fails with NotFound.
    """

    def job(conn: sqlite3.Connection, ctx: JobContext) -> Accepted:
        refs = len(targets) + (1 if outbound and outbound.recipients else 0)
        if refs:
            add_blob_ref(conn, ctx, digest, size, data, refs)
        delivered: list[Delivered] = []
        for target in targets:
            mailbox_id, uid, modseq = _take_uid(conn, target)
            conn.execute(
                "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, digest,"
                " size, header_size, sent_date, subject, message_id, envelope, headers,"
                " structure, imap_envelope, imap_bodystructure)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mailbox_id,
                    uid,
                    modseq,
                    encode_flags(normalize_flags(target.flags)),
                    internal_date,
                    digest,
                    *columns,
                ),
            )
            delivered.append(Delivered(MailboxId(mailbox_id), uid))
        queue_id = None
        if outbound and outbound.recipients:
            queue_id = insert_queue(conn, outbound, digest, size, datetime.now(UTC))
        return Accepted(tuple(delivered), queue_id)

    return job


def _meta(row: tuple[Any, ...]) -> MessageMeta:
    """A row of `_META_COLUMNS`; the envelope, headers and structure decoded when used."""
    envelope, headers, structure, imap_envelope, imap_text = row[9:]
    return _facts(row, stored_parse(envelope, headers, structure), imap_envelope, imap_text)


def _kept_meta(row: tuple[Any, ...]) -> MessageMeta:
    """A row of `_KEPT_COLUMNS`: the parts not read are NOT_READ."""
    return _facts(row, PARSE_NOT_READ, row[9], row[10])


def _facts(
    row: tuple[Any, ...],
    parse: StoredParse,
    imap_envelope: str | None,
    imap_bodystructure: str | None,
) -> MessageMeta:
    """The facts of a row whose first nine columns are those both column lists start with."""
    uid, modseq, flags, internal, size, digest, header_size, sent, subject = row[:9]
    return MessageMeta(
        uid,
        modseq,
        decode_flags(flags),
        decode_time(internal),
        size,
        digest,
        header_size,
        decode_time(sent) if sent else None,
        subject,
        *parse,
        imap_envelope,
        imap_bodystructure,
    )


def _require_mailbox(conn: sqlite3.Connection, mailbox_id: int) -> None:
    if conn.execute("SELECT 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone() is None:
        raise NotFound(f"no mailbox {mailbox_id}")


def fetch_summaries(conn: sqlite3.Connection, mailbox_id: int) -> list[MessageSummary]:
    _require_mailbox(conn, mailbox_id)
    rows = conn.execute(
        "SELECT uid, size, digest FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
    )
    return [MessageSummary._make(row) for row in rows]


def fetch_meta(
    conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int] | None, kept_only: bool = False
) -> list[MessageMeta]:
    columns, make = (_KEPT_COLUMNS, _kept_meta) if kept_only else (_META_COLUMNS, _meta)
    if uids is None:
        rows: Iterable[tuple[Any, ...]] = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? ORDER BY uid",
            (mailbox_id,),
        )
    elif len(uids) <= _LISTED_UIDS:  # a few (a client reading a message): by their keys
        among, values = uid_condition(uids)
        rows = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND {among} ORDER BY uid",
            (mailbox_id, *values),
        ).fetchall()
    elif max(uids) - min(uids) < 2 * len(uids):
        # Mostly consecutive UIDs (a slice of 1:*): one range of the key, minus the others.
        wanted = set(uids)
        rows = (
            row
            for row in conn.execute(
                f"SELECT {columns} FROM messages"
                " WHERE mailbox_id = ? AND uid BETWEEN ? AND ? ORDER BY uid",
                (mailbox_id, min(uids), max(uids)),
            )
            if row[0] in wanted
        )
    else:
        rows = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND {_UIDS} ORDER BY uid",
            (mailbox_id, json.dumps(list(uids))),
        )
    found = [make(r) for r in rows]
    if not found:  # none, or no such mailbox
        _require_mailbox(conn, mailbox_id)
    return found


def message_digest(conn: sqlite3.Connection, mailbox_id: int, uid: int) -> str:
    row = conn.execute(
        "SELECT digest FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
    ).fetchone()
    if row is None:
        raise NotFound(f"no message {uid} in mailbox {mailbox_id}")
    return str(row[0])


def set_flags_job(
    mailbox_id: int,
    uids: Sequence[int],
    flags: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None,
) -> Job:
    wanted = normalize_flags(flags)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> FlagResult:
        among, values = uid_condition(uids)
        rows = conn.execute(
            f"SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ? AND {among}"
            " ORDER BY uid",
            (mailbox_id, *values),
        ).fetchall()
        if not rows:
            _require_mailbox(conn, mailbox_id)
        current = ((uid, decode_flags(text), modseq) for uid, text, modseq in rows)
        modified, updates = flag_changes(current, wanted, mode, unchangedsince)
        if not updates:
            row = conn.execute(
                "SELECT highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
            ).fetchone()
            return FlagResult((), tuple(modified), int(row[0]))
        _, modseq = _bump(conn, mailbox_id, 0)
        conn.executemany(
            "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
            [(encode_flags(new), modseq, mailbox_id, uid) for uid, new in updates],
        )
        changed = tuple((uid, new, modseq) for uid, new in updates)
        return FlagResult(changed, tuple(modified), modseq)

    return job


def expunge_job(mailbox_id: int, uids: Sequence[int] | None) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> list[int]:
        _require_mailbox(conn, mailbox_id)
        if uids is None:
            rows = conn.execute(
                "SELECT uid, digest, flags FROM messages WHERE mailbox_id = ? ORDER BY uid",
                (mailbox_id,),
            ).fetchall()
            rows = [r for r in rows if "\\Deleted" in decode_flags(r[2])]
        else:
            rows = conn.execute(
                f"SELECT uid, digest, flags FROM messages WHERE mailbox_id = ? AND {_UIDS}"
                " ORDER BY uid",
                (mailbox_id, json.dumps(list(uids))),
            ).fetchall()
        if not rows:
            return []
        _, modseq = _bump(conn, mailbox_id, 0)
        gone = [int(r[0]) for r in rows]
        conn.executemany(
            "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?",
            [(mailbox_id, uid) for uid in gone],
        )
        conn.execute(  # one statement for all the expunged UIDs
            "INSERT INTO expunged (mailbox_id, uid, modseq) SELECT ?, value, ? FROM json_each(?)",
            (mailbox_id, modseq, json.dumps(gone)),
        )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[1]] = counts.get(row[1], 0) + 1
        release_blobs(conn, ctx, list(counts.items()))
        return gone

    return job


def vanished(
    conn: sqlite3.Connection, mailbox_id: int, since_modseq: int, limit: int | None = None
) -> list[int]:
    """The UIDs expunged after `since_modseq`, at most `limit` of them."""
    _require_mailbox(conn, mailbox_id)
    rows = conn.execute(
        "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid LIMIT ?",
        (mailbox_id, since_modseq, -1 if limit is None else limit),
    )
    return [int(r[0]) for r in rows]

"""What IMAP asks of the SQLite store beyond delivery: versions, changes, copies, subscriptions.

- `mailbox_version`: a mailbox's HIGHESTMODSEQ, UIDNEXT and message count in one cheap
  read, which a session compares with what it last told its client.
- `changed_since`: the UID, flags and MODSEQ of every message changed (or added) after
  a MODSEQ; with `expunged` (VANISHED) that is everything a session needs to bring its
  view up to date.
- `copy_job`: COPY and MOVE of many messages in one transaction, in UID order, each
  taking the target's next UID (RFC 4315's COPYUID maps them); MOVE moves the rows
  and expunges the sources with one MODSEQ. Bodies gain a reference per copy.
- `mailbox_counts`: STATUS's UNSEEN, DELETED and SIZE; `deleted_storage`: its
  DELETED-STORAGE, the size of the \\Deleted messages.
- Subscriptions, kept by name (a subscribed name need not exist).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from poczta.store.base import MailboxChange, MailboxId, NotFound
from poczta.store.codec import decode_flags
from poczta.store.names import mailbox_name
from poczta.store.sqlite.blob_refs import add_blob_ref
from poczta.store.sqlite.messages import _bump
from poczta.store.sqlite.writer import Job, JobContext

__all__ = [
    "changed_since",
    "claim_recent_job",
    "copy_job",
    "deleted_storage",
    "mailbox_counts",
    "mailbox_version",
    "recent_state",
    "subscribe_job",
    "subscriptions",
    "unsubscribe_job",
]

# Every column of a message but its place (mailbox, uid, modseq): what a copy keeps.
COPIED_COLUMNS = (
    "flags, internal_date, digest, size, header_size, sent_date, subject, message_id,"
    " envelope, headers, structure, imap_envelope, imap_bodystructure"
)
_UIDS = "uid IN (SELECT value FROM json_each(?))"


def mailbox_version(conn: sqlite3.Connection, mailbox_id: int) -> MailboxChange:
    row = conn.execute(
        "SELECT highestmodseq, uidnext, messages FROM mailboxes WHERE id = ?",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return MailboxChange(MailboxId(mailbox_id), row[0], row[1], row[2])


def changed_since(
    conn: sqlite3.Connection, mailbox_id: int, modseq: int, limit: int | None = None
) -> list[tuple[int, frozenset[str], int]]:
    """(uid, flags, modseq) of the messages changed after `modseq`, at most `limit`."""
    rows = conn.execute(
        "SELECT uid, flags, modseq FROM messages WHERE mailbox_id = ? AND modseq > ?"
        " ORDER BY uid LIMIT ?",
        (mailbox_id, modseq, -1 if limit is None else limit),
    )  # answered from the index `messages_modseq` alone (it holds uid and flags)
    decoded: dict[str, frozenset[str]] = {}  # a mailbox has few distinct flag texts
    out: list[tuple[int, frozenset[str], int]] = []
    for uid, text, changed in rows:
        message_flags = decoded.get(text)
        if message_flags is None:
            message_flags = decoded[text] = decode_flags(text)
        out.append((uid, message_flags, changed))
    return out


def mailbox_counts(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int, int, int]:
    """(messages, unseen, deleted, size in octets) of a mailbox."""
    row = conn.execute(
        "SELECT count(*),"
        " coalesce(sum(instr(' ' || flags || ' ', ' \\Seen ') = 0), 0),"
        " coalesce(sum(instr(' ' || flags || ' ', ' \\Deleted ') > 0), 0),"
        " coalesce(sum(size), 0) FROM messages WHERE mailbox_id = ?",
        (mailbox_id,),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def deleted_storage(conn: sqlite3.Connection, mailbox_id: int) -> int:
    """The summed size in octets of a mailbox's messages flagged \\Deleted."""
    row = conn.execute(
        "SELECT coalesce(sum(size), 0) FROM messages"
        " WHERE mailbox_id = ? AND instr(' ' || flags || ' ', ' \\Deleted ') > 0",
        (mailbox_id,),
    ).fetchone()
    return int(row[0])


def copy_job(user_id: int, source_id: int, uids: Sequence[int], target: str, move: bool) -> Job:
    """COPY or MOVE `uids` of mailbox `source_id` to the user's mailbox `target`.

    Returns (target's UIDVALIDITY, [(source uid, new uid)] in UID order); messages
    already gone are skipped. NotFound when the target does not exist (TRYCREATE).
    """
    target_name = mailbox_name(target)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> tuple[int, list[tuple[int, int]]]:
        row = conn.execute(
            "SELECT id, uidvalidity FROM mailboxes WHERE user_id = ? AND name = ?",
            (user_id, target_name),
        ).fetchone()
        owner = conn.execute("SELECT user_id FROM mailboxes WHERE id = ?", (source_id,)).fetchone()
        if row is None or owner is None or owner[0] != user_id:
            raise NotFound(f"no mailbox {target_name}")
        target_id, uidvalidity = int(row[0]), int(row[1])
        # A MOVE needs only the UIDs (the primary key's index has them); a COPY the bodies.
        columns = "uid" if move else "uid, digest, size"
        found = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND {_UIDS} ORDER BY uid",
            (source_id, json.dumps(list(uids))),
        ).fetchall()
        if not found:
            return uidvalidity, []
        first, modseq = _bump(conn, target_id, len(found))
        pairs = [(int(r[0]), first + i) for i, r in enumerate(found)]
        if move:  # the rows change places: a copy and a delete would rewrite every byte
            conn.executemany(
                "UPDATE messages SET mailbox_id = ?, uid = ?, modseq = ?"
                " WHERE mailbox_id = ? AND uid = ?",
                [(target_id, new, modseq, source_id, old) for old, new in pairs],
            )
            _, gone = _bump(conn, source_id, 0)
            conn.execute(  # one statement for all: a thousand inserts cost ten times more
                "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq)"
                " SELECT ?, value, ? FROM json_each(?)",
                (source_id, gone, json.dumps([old for old, _ in pairs])),
            )
        else:
            conn.executemany(
                f"INSERT INTO messages (mailbox_id, uid, modseq, {COPIED_COLUMNS})"
                f" SELECT ?, ?, ?, {COPIED_COLUMNS} FROM messages WHERE mailbox_id = ? AND uid = ?",
                [(target_id, new, modseq, source_id, old) for old, new in pairs],
            )
            counts: dict[str, tuple[int, int]] = {}
            for _, digest, size in found:
                count, _ = counts.get(digest, (0, size))
                counts[digest] = (count + 1, size)
            for digest, (count, size) in counts.items():
                add_blob_ref(conn, ctx, digest, size, None, count)
        return uidvalidity, pairs

    return job


def claim_recent_job(mailbox_id: int, up_to: int | None) -> Job:
    """Take the \\Recent messages of a mailbox for one session: return the first UID
    that is recent for it, and move the mailbox's mark to `up_to` (UIDNEXT when None;
    never backwards). With `up_to` 0 nothing is taken (EXAMINE, STATUS)."""

    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        row = conn.execute(
            "SELECT recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no mailbox {mailbox_id}")
        first, uidnext = int(row[0]), int(row[1])
        target = uidnext if up_to is None else up_to
        if target > first:
            conn.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (target, mailbox_id))
        return first

    return job


def recent_state(conn: sqlite3.Connection, mailbox_id: int) -> tuple[int, int]:
    """(the first UID not yet recent in any session, UIDNEXT) of a mailbox."""
    row = conn.execute(
        "SELECT recent_uid, uidnext FROM mailboxes WHERE id = ?", (mailbox_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox {mailbox_id}")
    return int(row[0]), int(row[1])


def subscriptions(conn: sqlite3.Connection, user_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM subscriptions WHERE user_id = ? ORDER BY name", (user_id,)
    )
    return [str(r[0]) for r in rows]


def subscribe_job(user_id: int, name: str) -> Job:
    name = mailbox_name(name)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO subscriptions (user_id, name) VALUES (?, ?)", (user_id, name)
        )

    return job


def unsubscribe_job(user_id: int, name: str) -> Job:
    name = mailbox_name(name)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> bool:
        cursor = conn.execute(
            "DELETE FROM subscriptions WHERE user_id = ? AND name = ?", (user_id, name)
        )
        return cursor.rowcount > 0

    return job

"""Moving a message from one mailbox of a user to another in the SQLite store.

One writer job: the message gets the target's next UID and MODSEQ, keeps its flags,
internal date and body, and leaves the source as an expunge (with its own MODSEQ, kept
for VANISHED). The body is still referenced once, so its blob row and file stay as
they are.
"""

from __future__ import annotations

import sqlite3

from poczta.store.base import NotFound
from poczta.store.names import mailbox_name
from poczta.store.sqlite.imap import COPIED_COLUMNS as _COPIED
from poczta.store.sqlite.messages import _bump, get_mailbox
from poczta.store.sqlite.writer import Job, JobContext

__all__ = ["move_message_job"]


def move_message_job(user_id: int, source: str, uid: int, target: str) -> Job:
    """A job moving message `uid` of mailbox `source` to `target`; it returns the new UID."""
    source, target = mailbox_name(source), mailbox_name(target)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> int:
        from_box = get_mailbox(conn, user_id, source)
        to_box = get_mailbox(conn, user_id, target)
        found = conn.execute(
            "SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?", (from_box.id, uid)
        ).fetchone()
        if found is None:
            raise NotFound(f"no message {uid} in {source}")
        new_uid, modseq = _bump(conn, to_box.id, 1)
        conn.execute(
            f"INSERT INTO messages (mailbox_id, uid, modseq, {_COPIED})"
            f" SELECT ?, ?, ?, {_COPIED} FROM messages WHERE mailbox_id = ? AND uid = ?",
            (to_box.id, new_uid, modseq, from_box.id, uid),
        )
        _, gone = _bump(conn, from_box.id, 0)
        conn.execute("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (from_box.id, uid))
        conn.execute(
            "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            (from_box.id, uid, gone),
        )
        return new_uid

    return job

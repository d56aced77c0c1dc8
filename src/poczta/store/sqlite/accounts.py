"""Accounts in the SQLite store: domains, users (with their default mailboxes) and aliases.

Plain synchronous functions on a connection: the `*_job` ones run as writer jobs
inside the writer's transaction, the others on a reader connection. Addresses are
normalised with `normalize_address` (lower-cased) before they touch the tables.
Recipient routing is not here: `find_addresses` answers the lookups of `poczta.routing`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from poczta.store.base import (
    DEFAULT_MAILBOXES,
    AddressEntry,
    AlreadyExists,
    NotFound,
    StoreError,
    UserId,
    UserRecord,
    normalize_address,
)
from poczta.store.codec import decode_time, now_text
from poczta.store.sqlite.blob_refs import release_blobs
from poczta.store.sqlite.messages import create_mailbox_row
from poczta.store.sqlite.writer import Job, JobContext

__all__ = [
    "add_alias_job",
    "add_domain_job",
    "add_user_job",
    "domain_exists",
    "find_addresses",
    "get_user",
    "list_aliases",
    "list_domains",
    "list_users",
    "remove_alias_job",
    "remove_domain_job",
    "remove_user_job",
    "set_password_job",
    "split_address",
]

_USER_COLUMNS = "id, address, password_hash, scram, created"
# One statement for everything `find_addresses` needs of some addresses: their domains
# that are ours ("d"), their users ("u") and their alias targets ("a"). It is on the
# RCPT path: one statement rather than three, and no ORDER BY (a temporary B-tree each
# time), so the targets are put in order afterwards.
_FIND = (
    "SELECT 'd', name, NULL, NULL, NULL, NULL FROM domains WHERE name IN ({domains})"
    " UNION ALL SELECT 'u', address, id, password_hash, scram, created FROM users"
    " WHERE address IN ({addresses})"
    " UNION ALL SELECT 'a', source, target, NULL, NULL, NULL FROM aliases"
    " WHERE source IN ({addresses})"
)
_FIND_CHUNK = 300  # addresses per statement: at most 900 parameters, below SQLite's 999


def split_address(address: str) -> tuple[str, str]:
    """(local, domain) of a normalised address; raises `StoreError` when there is no '@'."""
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        raise StoreError(f"not an address: {address!r}")
    return local, domain


def _user(row: tuple[int, str, str, str, str]) -> UserRecord:
    return UserRecord(UserId(row[0]), row[1], row[2], row[3], decode_time(row[4]))


# --- domains ---------------------------------------------------------------


def add_domain_job(domain: str) -> Job:
    name = normalize_address(domain)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        try:
            conn.execute("INSERT INTO domains (name, created) VALUES (?, ?)", (name, now_text()))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"domain {name} exists") from exc

    return job


def remove_domain_job(domain: str, force: bool) -> Job:
    name = normalize_address(domain)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone() is None:
            raise NotFound(f"no domain {name}")
        users = [r[0] for r in conn.execute("SELECT id FROM users WHERE domain = ?", (name,))]
        if users and not force:
            raise StoreError(f"domain {name} still has {len(users)} user(s)")
        for user_id in users:
            _delete_user(conn, ctx, user_id)
        conn.execute("DELETE FROM aliases WHERE domain = ?", (name,))
        conn.execute("DELETE FROM domains WHERE name = ?", (name,))

    return job


def list_domains(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM domains ORDER BY name")]


def domain_exists(conn: sqlite3.Connection, domain: str) -> bool:
    row = conn.execute("SELECT 1 FROM domains WHERE name = ?", (normalize_address(domain),))
    return row.fetchone() is not None


# --- users -----------------------------------------------------------------


def add_user_job(address: str, password_hash: str, scram: str) -> Job:
    addr = normalize_address(address)
    _, domain = split_address(addr)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> UserId:
        if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
            raise NotFound(f"no domain {domain}")
        try:
            cursor = conn.execute(
                "INSERT INTO users (address, domain, password_hash, scram, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (addr, domain, password_hash, scram, now_text()),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"user {addr} exists") from exc
        user_id = cursor.lastrowid
        assert user_id is not None
        for name, special_use in DEFAULT_MAILBOXES:
            create_mailbox_row(conn, user_id, name, special_use)
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions (user_id, name) VALUES (?, ?)",
                (user_id, name),
            )
        return UserId(user_id)

    return job


def set_password_job(address: str, password_hash: str, scram: str) -> Job:
    addr = normalize_address(address)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        cursor = conn.execute(
            "UPDATE users SET password_hash = ?, scram = ? WHERE address = ?",
            (password_hash, scram, addr),
        )
        if cursor.rowcount == 0:
            raise NotFound(f"no user {addr}")

    return job


def _delete_user(conn: sqlite3.Connection, ctx: JobContext, user_id: int) -> None:
    digests = conn.execute(
        "SELECT digest, count(*) FROM messages JOIN mailboxes ON mailboxes.id = mailbox_id"
        " WHERE user_id = ? GROUP BY digest",
        (user_id,),
    ).fetchall()
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))  # cascades to mailboxes, messages
    release_blobs(conn, ctx, digests)


def remove_user_job(address: str) -> Job:
    addr = normalize_address(address)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        row = conn.execute("SELECT id FROM users WHERE address = ?", (addr,)).fetchone()
        if row is None:
            raise NotFound(f"no user {addr}")
        _delete_user(conn, ctx, row[0])

    return job


def list_users(conn: sqlite3.Connection, domain: str | None) -> list[UserRecord]:
    if domain is None:
        rows = conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY address")
    else:
        rows = conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? ORDER BY address",
            (normalize_address(domain),),
        )
    return [_user(r) for r in rows]


def get_user(conn: sqlite3.Connection, address: str) -> UserRecord | None:
    row = conn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE address = ?", (normalize_address(address),)
    ).fetchone()
    return _user(row) if row else None


# --- aliases ---------------------------------------------------------------


def add_alias_job(source: str, target: str) -> Job:
    src, dst = normalize_address(source), normalize_address(target)
    _, domain = split_address(src)
    split_address(dst)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
            raise NotFound(f"no domain {domain}")
        try:
            conn.execute(
                "INSERT INTO aliases (source, target, domain) VALUES (?, ?, ?)",
                (src, dst, domain),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"alias {src} -> {dst} exists") from exc

    return job


def remove_alias_job(source: str, target: str | None) -> Job:
    src = normalize_address(source)

    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        if target is None:
            cursor = conn.execute("DELETE FROM aliases WHERE source = ?", (src,))
        else:
            cursor = conn.execute(
                "DELETE FROM aliases WHERE source = ? AND target = ?",
                (src, normalize_address(target)),
            )
        if cursor.rowcount == 0:
            raise NotFound(f"no alias {src}")

    return job


def list_aliases(conn: sqlite3.Connection, domain: str | None) -> list[tuple[str, str]]:
    if domain is None:
        rows = conn.execute("SELECT source, target FROM aliases ORDER BY source, target")
    else:
        rows = conn.execute(
            "SELECT source, target FROM aliases WHERE domain = ? ORDER BY source, target",
            (normalize_address(domain),),
        )
    return [(r[0], r[1]) for r in rows]


def find_addresses(conn: sqlite3.Connection, addresses: Sequence[str]) -> list[AddressEntry]:
    """The `AddressEntry` of each address: one statement (one more per 300 addresses)."""
    wanted = [normalize_address(address) for address in addresses]
    unique = list(dict.fromkeys(wanted))
    ours: set[str] = set()
    users: dict[str, UserRecord] = {}
    targets: dict[str, list[str]] = {}
    for first in range(0, len(unique), _FIND_CHUNK):
        chunk = unique[first : first + _FIND_CHUNK]
        domains = list({a.rpartition("@")[2] for a in chunk if "@" in a})
        query = _FIND.format(
            domains=",".join("?" * len(domains)), addresses=",".join("?" * len(chunk))
        )
        for kind, key, *rest in conn.execute(query, (*domains, *chunk, *chunk)).fetchall():
            if kind == "d":
                ours.add(key)
            elif kind == "u":
                users[key] = _user((rest[0], key, *rest[1:]))
            else:
                targets.setdefault(key, []).append(rest[0])
    return [
        AddressEntry(
            address,
            "@" in address and address.rpartition("@")[2] in ours,
            users.get(address),
            tuple(sorted(targets.get(address, ()))),
        )
        for address in wanted
    ]

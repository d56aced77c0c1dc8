"""Accounts in the PostgreSQL store: domains, users (with their default mailboxes) and aliases.

Async functions on a connection inside the caller's transaction (see `access.Database`).
Addresses are normalised with `normalize_address` (lower-cased) before they touch the
tables. Recipient routing is not here: `find_addresses` answers `poczta.routing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

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
from poczta.store.postgres.access import Connection
from poczta.store.postgres.bodies import release_blobs
from poczta.store.postgres.mailboxes import create_mailbox_row

__all__ = [
    "add_alias",
    "add_domain",
    "add_user",
    "domain_exists",
    "find_addresses",
    "get_user",
    "list_aliases",
    "list_domains",
    "list_users",
    "remove_alias",
    "remove_domain",
    "remove_user",
    "set_password",
    "split_address",
]

_USER_COLUMNS = "id, address, password_hash, scram, created"
# Everything `find_addresses` needs in one statement: the domains that are ours ("d"),
# the users ("u") and the alias targets ("a") of the addresses asked.
_FIND = (
    "SELECT 'd', name, NULL::bigint, NULL::text, NULL::text, NULL::timestamptz"
    " FROM domains WHERE name = ANY($1::text[])"
    " UNION ALL SELECT 'u', address, id, password_hash, scram, created FROM users"
    " WHERE address = ANY($2::text[])"
    " UNION ALL SELECT 'a', source, NULL, target, NULL, NULL FROM aliases"
    " WHERE source = ANY($2::text[])"
)


def split_address(address: str) -> tuple[str, str]:
    """(local, domain) of a normalised address; raises `StoreError` when there is no '@'."""
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        raise StoreError(f"not an address: {address!r}")
    return local, domain


def _user(row: Any) -> UserRecord:
    return UserRecord(UserId(row[0]), row[1], row[2], row[3], row[4])


async def _require_domain(conn: Connection, name: str) -> None:
    if await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", name) is None:
        raise NotFound(f"no domain {name}")


# --- domains ---------------------------------------------------------------


async def add_domain(conn: Connection, domain: str) -> None:
    name = normalize_address(domain)
    inserted = await conn.fetchval(
        "INSERT INTO domains (name) VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1", name
    )
    if inserted is None:
        raise AlreadyExists(f"domain {name} exists")


async def remove_domain(conn: Connection, domain: str, force: bool, now: float) -> None:
    name = normalize_address(domain)
    if await conn.fetchval("SELECT 1 FROM domains WHERE name = $1 FOR UPDATE", name) is None:
        raise NotFound(f"no domain {name}")
    users = [r[0] for r in await conn.fetch("SELECT id FROM users WHERE domain = $1", name)]
    if users and not force:
        raise StoreError(f"domain {name} still has {len(users)} user(s)")
    await _delete_users(conn, users, now)
    await conn.execute("DELETE FROM aliases WHERE domain = $1", name)
    await conn.execute("DELETE FROM domains WHERE name = $1", name)


async def list_domains(conn: Connection) -> list[str]:
    return [r[0] for r in await conn.fetch("SELECT name FROM domains ORDER BY name")]


async def domain_exists(conn: Connection, domain: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", normalize_address(domain))
    return found is not None


# --- users -----------------------------------------------------------------


async def add_user(conn: Connection, address: str, password_hash: str, scram: str) -> UserId:
    addr = normalize_address(address)
    _, domain = split_address(addr)
    # FOR SHARE: the domain cannot go while its new user is being added
    if await conn.fetchval("SELECT 1 FROM domains WHERE name = $1 FOR SHARE", domain) is None:
        raise NotFound(f"no domain {domain}")
    user_id = await conn.fetchval(
        "INSERT INTO users (address, domain, password_hash, scram) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (address) DO NOTHING RETURNING id",
        addr,
        domain,
        password_hash,
        scram,
    )
    if user_id is None:
        raise AlreadyExists(f"user {addr} exists")
    for name, special_use in DEFAULT_MAILBOXES:
        await create_mailbox_row(conn, user_id, name, special_use)
    await conn.executemany(
        "INSERT INTO subscriptions (user_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(user_id, name) for name, _ in DEFAULT_MAILBOXES],
    )
    return UserId(user_id)


async def set_password(conn: Connection, address: str, password_hash: str, scram: str) -> None:
    addr = normalize_address(address)
    status = await conn.execute(
        "UPDATE users SET password_hash = $1, scram = $2 WHERE address = $3",
        password_hash,
        scram,
        addr,
    )
    if status == "UPDATE 0":
        raise NotFound(f"no user {addr}")


async def _delete_users(conn: Connection, user_ids: Sequence[int], now: float) -> None:
    if not user_ids:
        return
    rows = await conn.fetch(
        "SELECT m.digest, count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
        " WHERE b.user_id = ANY($1::bigint[]) GROUP BY m.digest",
        list(user_ids),
    )
    # cascades to mailboxes, messages, subscriptions, quota and sending rows
    await conn.execute("DELETE FROM users WHERE id = ANY($1::bigint[])", list(user_ids))
    await release_blobs(conn, [(r[0], r[1]) for r in rows], now)


async def remove_user(conn: Connection, address: str, now: float) -> None:
    addr = normalize_address(address)
    user_id = await conn.fetchval("SELECT id FROM users WHERE address = $1 FOR UPDATE", addr)
    if user_id is None:
        raise NotFound(f"no user {addr}")
    await _delete_users(conn, [user_id], now)


async def list_users(conn: Connection, domain: str | None) -> list[UserRecord]:
    if domain is None:
        rows = await conn.fetch(f"SELECT {_USER_COLUMNS} FROM users ORDER BY address")
    else:
        rows = await conn.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE domain = $1 ORDER BY address",
            normalize_address(domain),
        )
    return [_user(r) for r in rows]


async def get_user(conn: Connection, address: str) -> UserRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE address = $1", normalize_address(address)
    )
    return _user(row) if row else None


# --- aliases ---------------------------------------------------------------


async def add_alias(conn: Connection, source: str, target: str) -> None:
    src, dst = normalize_address(source), normalize_address(target)
    _, domain = split_address(src)
    split_address(dst)
    if await conn.fetchval("SELECT 1 FROM domains WHERE name = $1 FOR SHARE", domain) is None:
        raise NotFound(f"no domain {domain}")
    try:
        inserted = await conn.fetchval(
            "INSERT INTO aliases (source, target, domain) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            src,
            dst,
            domain,
        )
    except asyncpg.ForeignKeyViolationError as exc:  # the domain went meanwhile
        raise NotFound(f"no domain {domain}") from exc
    if inserted is None:
        raise AlreadyExists(f"alias {src} -> {dst} exists")


async def remove_alias(conn: Connection, source: str, target: str | None) -> None:
    src = normalize_address(source)
    if target is None:
        status = await conn.execute("DELETE FROM aliases WHERE source = $1", src)
    else:
        status = await conn.execute(
            "DELETE FROM aliases WHERE source = $1 AND target = $2",
            src,
            normalize_address(target),
        )
    if status == "DELETE 0":
        raise NotFound(f"no alias {src}")


async def list_aliases(conn: Connection, domain: str | None) -> list[tuple[str, str]]:
    if domain is None:
        rows = await conn.fetch("SELECT source, target FROM aliases ORDER BY source, target")
    else:
        rows = await conn.fetch(
            "SELECT source, target FROM aliases WHERE domain = $1 ORDER BY source, target",
            normalize_address(domain),
        )
    return [(r[0], r[1]) for r in rows]


async def find_addresses(conn: Connection, addresses: Sequence[str]) -> list[AddressEntry]:
    """The `AddressEntry` of each address, in one statement however many are asked."""
    wanted = [normalize_address(address) for address in addresses]
    if not wanted:
        return []
    unique = list(dict.fromkeys(wanted))
    domains = list({a.rpartition("@")[2] for a in unique if "@" in a})
    ours: set[str] = set()
    users: dict[str, UserRecord] = {}
    targets: dict[str, list[str]] = {}
    for kind, key, user_id, text, scram, created in await conn.fetch(_FIND, domains, unique):
        if kind == "d":
            ours.add(key)
        elif kind == "u":
            users[key] = UserRecord(UserId(user_id), key, text, scram, created)
        else:
            targets.setdefault(key, []).append(text)
    return [
        AddressEntry(
            address,
            "@" in address and address.rpartition("@")[2] in ours,
            users.get(address),
            tuple(sorted(targets.get(address, ()))),
        )
        for address in wanted
    ]

"""The state of the limits that hold across worker processes, in SQLite: `SqliteSharedLimits`.

Failed logins, POP3 maildrop locks and per-IP connection counts of every worker of one
machine, in a database file of their own beside the mail store's (``NAME-limits.db``
for ``NAME.db``). A `SideStore`: each worker writes it directly on its own connection
and thread, not through the committer. Its own file, because the mail store's write
lock is held for a whole group commit (an fsync): a connection being accepted must not
wait for a delivery. And ``synchronous=OFF``: nothing here is worth an fsync, since it
describes live processes only; a crash of the machine leaves rows of processes that are
gone, which lose their hold once their lease has run out. A count is one small
``BEGIN IMMEDIATE`` transaction on a file in the page cache (tens of microseconds).

The schema is this module's, not a migration: the file holds nothing to keep across an
upgrade, so one of another version is emptied and made again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from poczta.accounts import Failures
from poczta.store.sqlite.side import SideStore
from poczta.store.sqlite.writer import begin_immediate

__all__ = ["SqliteSharedLimits"]

SCHEMA_VERSION = 1
_TABLES = ("login_failures", "maildrop_leases", "connection_counts")
_SCHEMA = """
CREATE TABLE login_failures (
    network TEXT NOT NULL,
    account TEXT NOT NULL,
    at      REAL NOT NULL,
    pair    INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX login_failures_network ON login_failures (network, at);
CREATE INDEX login_failures_account ON login_failures (account, at);
CREATE INDEX login_failures_at ON login_failures (at);
CREATE TABLE maildrop_leases (
    address TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX maildrop_leases_holder ON maildrop_leases (holder);
CREATE TABLE connection_counts (
    ip      TEXT NOT NULL,
    holder  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (ip, holder)
);
CREATE INDEX connection_counts_holder ON connection_counts (holder);
"""

_COUNTS = (
    "SELECT"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE network = ?1 AND at > ?3 LIMIT ?4)),"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE network = ?1 AND account = ?2 AND pair AND at > ?3 LIMIT ?5)),"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE account = ?2 AND at > ?3 LIMIT ?6))"
)


def _counts(conn: sqlite3.Connection, key: tuple[object, ...]) -> Failures:
    row = conn.execute(_COUNTS, key).fetchone()
    return Failures(int(row[0]), int(row[1]), int(row[2]))


class SqliteSharedLimits(SideStore):
    """`SharedLimits` in the limits file beside the SQLite store at `db_path`."""

    thread_name = "poczta-limits"
    what = "limits store"

    @classmethod
    def file_for(cls, db_path: Path) -> Path:
        return db_path.with_name(f"{db_path.stem}-limits{db_path.suffix or '.db'}")

    @classmethod
    def prepare(cls, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA busy_timeout = 0")  # begin_immediate polls in short steps
        begin_immediate(conn)
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for table in _TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    # ------------------------------------------------------------ login failures

    async def login_failures(
        self, network: str, account: str, since: float, caps: Failures
    ) -> Failures:
        key = (network, account, since, *caps)
        return await self._run(lambda c: _counts(c, key))

    async def add_login_failure(
        self, network: str, account: str, now: float, since: float, caps: Failures
    ) -> Failures:
        def add(conn: sqlite3.Connection) -> Failures:
            conn.execute("DELETE FROM login_failures WHERE at <= ?", (since,))
            conn.execute(
                "INSERT INTO login_failures (network, account, at) VALUES (?, ?, ?)",
                (network, account, now),
            )
            return _counts(conn, (network, account, since, *caps))

        return await self._transaction(add)

    async def forgive_login_failures(self, network: str, account: str) -> None:
        await self._transaction(
            lambda c: c.execute(
                "UPDATE login_failures SET pair = 0 WHERE network = ? AND account = ? AND pair",
                (network, account),
            )
        )

    # ------------------------------------------------------------ maildrop locks

    async def take_maildrop(self, user: str, holder: str, now: float, until: float) -> str:
        def take(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT holder, expires FROM maildrop_leases WHERE address = ?", (user,)
            ).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return str(row[0])
            conn.execute(
                "INSERT OR REPLACE INTO maildrop_leases (address, holder, expires)"
                " VALUES (?, ?, ?)",
                (user, holder, until),
            )
            return holder

        return await self._transaction(take)

    async def take_maildrop_from(self, user: str, holder: str, gone: str, until: float) -> bool:
        def take(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE maildrop_leases SET holder = ?, expires = ?"
                " WHERE address = ? AND holder = ?",
                (holder, until, user, gone),
            )
            return cursor.rowcount == 1

        return await self._transaction(take)

    async def release_maildrop(self, user: str, holder: str) -> None:
        await self._transaction(
            lambda c: c.execute(
                "DELETE FROM maildrop_leases WHERE address = ? AND holder = ?", (user, holder)
            )
        )

    # ------------------------------------------------------------ connection counts

    async def count_connections(
        self,
        holder: str,
        closed: Mapping[str, int],
        opened: Sequence[str],
        limit: int,
        now: float,
        until: float,
    ) -> list[bool]:
        def count(conn: sqlite3.Connection) -> list[bool]:
            conn.executemany(
                "UPDATE connection_counts SET count = max(count - ?, 0)"
                " WHERE ip = ? AND holder = ?",
                [(n, ip, holder) for ip, n in closed.items()],
            )
            return [_open_one(conn, ip, holder, limit, now, until) for ip in opened]

        return await self._transaction(count)

    async def connection_holders(self, ip: str) -> list[str]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT holder FROM connection_counts WHERE ip = ? AND count > 0", (ip,)
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------ holders

    async def renew_leases(self, holder: str, until: float, stale: float) -> None:
        def renew(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE maildrop_leases SET expires = ? WHERE holder = ?", (until, holder))
            conn.execute("DELETE FROM connection_counts WHERE holder = ? AND count = 0", (holder,))
            conn.execute(
                "UPDATE connection_counts SET expires = ? WHERE holder = ?", (until, holder)
            )
            conn.execute("DELETE FROM maildrop_leases WHERE expires < ?", (stale,))
            conn.execute("DELETE FROM connection_counts WHERE expires < ?", (stale,))

        await self._transaction(renew)

    async def lease_holders(self) -> list[str]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT holder FROM maildrop_leases UNION SELECT holder FROM connection_counts"
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    async def drop_holders(self, holders: Sequence[str]) -> int:
        names = [(name,) for name in holders]

        def drop(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany("DELETE FROM maildrop_leases WHERE holder = ?", names)
            conn.executemany("DELETE FROM connection_counts WHERE holder = ?", names)
            return conn.total_changes - before

        return await self._transaction(drop)


def _open_one(
    conn: sqlite3.Connection, ip: str, holder: str, limit: int, now: float, until: float
) -> bool:
    (total,) = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM connection_counts WHERE ip = ? AND expires > ?",
        (ip, now),
    ).fetchone()
    if total >= limit:
        return False
    conn.execute(
        "INSERT INTO connection_counts (ip, holder, count, expires) VALUES (?, ?, 1, ?)"
        " ON CONFLICT (ip, holder) DO UPDATE SET count = count + 1, expires = excluded.expires",
        (ip, holder, until),
    )
    return True

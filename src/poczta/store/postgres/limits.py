"""The state of the limits that hold across nodes, in PostgreSQL: `PostgresSharedLimits`.

Failed logins, POP3 maildrop locks and per-IP connection counts live in the UNLOGGED
tables of migration 0002 (no WAL flush for any of them; see there). What sits on the
path of every connection or login is one statement outside an explicit transaction, so
one round trip: the throttle's read before a password is checked, a connection counted
at accept and ended (`count_connections`: the connections that ended and those that
began since the last call, together in one statement; each begun one through the
`open_connection` function, which sums and increments under a per-address advisory
lock), a maildrop taken when it is free. What is rarer
(a failure recorded, renewals, holders dropped) is one small transaction.

These run on a small pool of their own (`open_limits_pool`), so that they never wait
behind a delivery for a connection; like every pool of the store, it gives connections
back without the driver's reset statement (`connect.keep_session`): nothing here leaves
state in a session (the advisory lock ends with its transaction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from poczta.accounts import Failures
from poczta.config_schema import StoreSettings
from poczta.store.postgres.access import Connection, Database
from poczta.store.postgres.connect import create_pool

__all__ = ["LIMITS_POOL_SIZE", "PostgresSharedLimits", "open_limits_pool"]

LIMITS_POOL_SIZE = 4  # connections: each statement holds one for a fraction of a millisecond

_COUNTS = (
    "SELECT"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE network = $1 AND at > $3 LIMIT $4) n),"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE network = $1 AND account = $2 AND pair AND at > $3 LIMIT $5) p),"
    " (SELECT count(*) FROM (SELECT 1 FROM login_failures"
    "   WHERE account = $2 AND at > $3 LIMIT $6) a)"
)
# The closes since the last call, then each open through `open_connection`, one statement:
# the closes' CTE runs first (the count of its rows gates the opens' scan), and
# `open_connection` is volatile, so each call sees what the closes and the calls before
# it counted.
_COUNT = (
    "WITH off AS (UPDATE connection_counts c SET count = greatest(c.count - e.n, 0)"
    " FROM unnest($2::text[], $3::integer[]) AS e(ip, n)"
    " WHERE c.ip = e.ip AND c.holder = $1 RETURNING 1)"
    " SELECT coalesce(array_agg(open_connection(t.ip, $1, $5, $6, $7) ORDER BY t.n), '{}')"
    " FROM unnest($4::text[]) WITH ORDINALITY AS t(ip, n)"
    " WHERE (SELECT count(*) FROM off) >= 0"
)
_TAKE = (
    "INSERT INTO maildrop_leases (address, holder, expires) VALUES ($1, $2, $4)"
    " ON CONFLICT (address) DO UPDATE SET holder = excluded.holder, expires = excluded.expires"
    " WHERE maildrop_leases.expires <= $3 OR maildrop_leases.holder = excluded.holder"
    " RETURNING holder"
)


async def open_limits_pool(
    settings: StoreSettings, data_dir: Path, command_timeout: float | None
) -> Any:
    """The pool of the shared limits' statements."""
    return await create_pool(
        settings,
        data_dir,
        min_size=1,
        max_size=LIMITS_POOL_SIZE,
        command_timeout=command_timeout,
    )


def _rows(status: str) -> int:
    """The row count of a command status such as "DELETE 3"."""
    return int(status.rpartition(" ")[2] or 0)


class PostgresSharedLimits:
    """`SharedLimits` on the store's database, through `db` (a pool of its own, or the
    store's); `close` closes it when it is its own."""

    def __init__(self, db: Database, *, own: bool = False) -> None:
        self._db = db
        self._own = own

    # ------------------------------------------------------------ login failures

    async def login_failures(
        self, network: str, account: str, since: float, caps: Failures
    ) -> Failures:
        row = await self._db.statement(
            lambda c: c.fetchrow(_COUNTS, network, account, since, *caps)
        )
        return Failures(int(row[0]), int(row[1]), int(row[2]))

    async def add_login_failure(
        self, network: str, account: str, now: float, since: float, caps: Failures
    ) -> Failures:
        async def add(conn: Connection) -> Failures:
            await conn.execute("DELETE FROM login_failures WHERE at <= $1", since)
            await conn.execute(
                "INSERT INTO login_failures (network, account, at) VALUES ($1, $2, $3)",
                network,
                account,
                now,
            )
            row = await conn.fetchrow(_COUNTS, network, account, since, *caps)
            return Failures(int(row[0]), int(row[1]), int(row[2]))

        return await self._db.write(add)

    async def forgive_login_failures(self, network: str, account: str) -> None:
        await self._db.statement(
            lambda c: c.execute(
                "UPDATE login_failures SET pair = false"
                " WHERE network = $1 AND account = $2 AND pair",
                network,
                account,
            )
        )

    # ------------------------------------------------------------ maildrop locks

    async def take_maildrop(self, user: str, holder: str, now: float, until: float) -> str:
        while True:
            taken = await self._db.statement(lambda c: c.fetchval(_TAKE, user, holder, now, until))
            if taken is not None:
                return str(taken)
            current = await self._db.statement(
                lambda c: c.fetchval("SELECT holder FROM maildrop_leases WHERE address = $1", user)
            )
            if current is not None:  # else released meanwhile: try again
                return str(current)

    async def take_maildrop_from(self, user: str, holder: str, gone: str, until: float) -> bool:
        status = await self._db.statement(
            lambda c: c.execute(
                "UPDATE maildrop_leases SET holder = $2, expires = $4"
                " WHERE address = $1 AND holder = $3",
                user,
                holder,
                gone,
                until,
            )
        )
        return _rows(status) == 1

    async def release_maildrop(self, user: str, holder: str) -> None:
        await self._db.statement(
            lambda c: c.execute(
                "DELETE FROM maildrop_leases WHERE address = $1 AND holder = $2", user, holder
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
        # The opens in the order of their addresses: each takes its address's advisory
        # lock until the commit, and one order on every node means no deadlock.
        order = sorted(range(len(opened)), key=opened.__getitem__)
        ips = [opened[n] for n in order]
        args = (holder, list(closed), list(closed.values()), ips, limit, now, until)
        answers = await self._db.statement(lambda c: c.fetchval(_COUNT, *args))
        result = [False] * len(opened)
        for n, answer in zip(order, answers, strict=True):
            result[n] = bool(answer)
        return result

    async def connection_holders(self, ip: str) -> list[str]:
        rows = await self._db.statement(
            lambda c: c.fetch(
                "SELECT holder FROM connection_counts WHERE ip = $1 AND count > 0", ip
            )
        )
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------ holders

    async def renew_leases(self, holder: str, until: float, stale: float) -> None:
        async def renew(conn: Connection) -> None:
            await conn.execute(
                "UPDATE maildrop_leases SET expires = $2 WHERE holder = $1", holder, until
            )
            await conn.execute(
                "DELETE FROM connection_counts WHERE holder = $1 AND count = 0", holder
            )
            await conn.execute(
                "UPDATE connection_counts SET expires = $2 WHERE holder = $1", holder, until
            )
            await conn.execute("DELETE FROM maildrop_leases WHERE expires < $1", stale)
            await conn.execute("DELETE FROM connection_counts WHERE expires < $1", stale)

        await self._db.write(renew)

    async def lease_holders(self) -> list[str]:
        rows = await self._db.read(
            lambda c: c.fetch(
                "SELECT holder FROM maildrop_leases UNION SELECT holder FROM connection_counts"
            )
        )
        return [str(row[0]) for row in rows]

    async def drop_holders(self, holders: Sequence[str]) -> int:
        names = list(holders)

        async def drop(conn: Connection) -> int:
            leases = await conn.execute(
                "DELETE FROM maildrop_leases WHERE holder = ANY($1::text[])", names
            )
            counts = await conn.execute(
                "DELETE FROM connection_counts WHERE holder = ANY($1::text[])", names
            )
            return _rows(leases) + _rows(counts)

        return await self._db.write(drop)

    async def close(self) -> None:
        if self._own:
            await self._db.close()

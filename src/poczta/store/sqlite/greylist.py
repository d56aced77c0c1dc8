"""Greylisting state in the SQLite database: `SqliteGreylistStore`, a `GreylistStore`.

A `SideStore`: its own connection (``synchronous=NORMAL``) and thread. Each change is
one small autocommit statement; a crash can only forget the last greylisting entries --
a sender is then asked to retry once more, which costs far less than an fsync on every
recipient of every attempt. The tables come from migration 0002.
"""

from __future__ import annotations

import sqlite3

from poczta.mailauth.greylist import GreylistTriplet, NetworkRecord, TripletRecord
from poczta.store.sqlite.side import SideStore

__all__ = ["SqliteGreylistStore"]

_GET_TRIPLET = (
    "SELECT first_seen, last_seen, expires, passed_at, attempts FROM greylist_triplets"
    " WHERE network = ? AND sender = ? AND recipient = ?"
)
_PUT_TRIPLET = (
    "INSERT OR REPLACE INTO greylist_triplets (network, sender, recipient, first_seen,"
    " last_seen, expires, passed_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_GET_NETWORK = (
    "SELECT passes, last_pass, whitelisted_until, expires FROM greylist_networks WHERE network = ?"
)
_PUT_NETWORK = (
    "INSERT OR REPLACE INTO greylist_networks (network, passes, last_pass,"
    " whitelisted_until, expires) VALUES (?, ?, ?, ?, ?)"
)


class SqliteGreylistStore(SideStore):
    """`GreylistStore` on the SQLite database at `db_path`; create it with `open`."""

    thread_name = "poczta-greylist"
    what = "greylist store"

    async def get_triplet(self, triplet: GreylistTriplet) -> TripletRecord | None:
        key = (triplet.network, triplet.sender, triplet.recipient)
        row = await self._run(lambda c: c.execute(_GET_TRIPLET, key).fetchone())
        if row is None:
            return None
        first_seen, last_seen, expires, passed_at, attempts = row
        return TripletRecord(
            triplet,
            float(first_seen),
            float(last_seen),
            float(expires),
            None if passed_at is None else float(passed_at),
            int(attempts),
        )

    async def put_triplet(self, record: TripletRecord) -> None:
        t = record.triplet
        values = (
            t.network,
            t.sender,
            t.recipient,
            record.first_seen,
            record.last_seen,
            record.expires,
            record.passed_at,
            record.attempts,
        )
        await self._run(lambda c: c.execute(_PUT_TRIPLET, values))

    async def get_network(self, network: str) -> NetworkRecord | None:
        row = await self._run(lambda c: c.execute(_GET_NETWORK, (network,)).fetchone())
        if row is None:
            return None
        passes, last_pass, until, expires = row
        return NetworkRecord(network, int(passes), float(last_pass), float(until), float(expires))

    async def put_network(self, record: NetworkRecord) -> None:
        values = (
            record.network,
            record.passes,
            record.last_pass,
            record.whitelisted_until,
            record.expires,
        )
        await self._run(lambda c: c.execute(_PUT_NETWORK, values))

    async def sweep(self, now: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM greylist_triplets WHERE expires <= ?", (now,))
            m = conn.execute("DELETE FROM greylist_networks WHERE expires <= ?", (now,))
            return n.rowcount + m.rowcount

        return await self._transaction(delete)

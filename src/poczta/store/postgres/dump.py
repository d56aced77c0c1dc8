"""The PostgreSQL store's rows and bodies in the neutral shape of a whole-store copy
(`poczta.store.copy`): read from a store as the copy's source, written into an empty one
as its target.

One connection of its own, opened and migrated as the store does (`connect`, `migrate`),
and plain SQL: a copy writes what the store's interface cannot, ids included. A batch
goes in by COPY, which takes the ids as given (the identities are moved past them at the
end, so that new rows never take a copied id) and runs the quota triggers once per batch
instead of once per row, which rebuild quota usage as the messages go in. Flags are a
text array here, times timestamptz with the offset of a zoned one in `<name>_zone`. A
body is read and written a chunk (`bodies.CHUNK`) at a time, a batch's chunks streamed
into one COPY.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from poczta.config_schema import StoreSettings
from poczta.store.copy.tables import BLOBS, CopyError, Counters, Kind, Row, Table
from poczta.store.postgres.access import Connection, translated
from poczta.store.postgres.backfill import backfill_fetch_text
from poczta.store.postgres.bodies import CHUNK
from poczta.store.postgres.connect import connect, parse_dsn
from poczta.store.postgres.messages import join_time, split_time
from poczta.store.postgres.migrate import migrate

__all__ = ["LEFT_OUT", "PostgresTables"]

#: What of the schema is not a column of `TABLES` (but for the `<name>_zone` of a zoned
#: time), and why (None: the whole table).
LEFT_OUT: dict[str, frozenset[str] | None] = {
    "schema_version": None,  # the target's own migrations
    "uidvalidity_clock": None,  # carried as a counter
    "blob_chunks": None,  # the bodies, copied by digest
    "quota_usage": None,  # kept by triggers as the messages go in
    "blobs": frozenset({"id"}),  # internal: messages name bodies by digest
    "mailboxes": frozenset({"messages"}),  # kept by triggers as the messages go in
    "messages": frozenset({"imap_envelope", "imap_bodystructure"}),  # made at the end
    # The live state of running servers (migration 0002), nothing a copy could carry:
    "login_failures": None,
    "maildrop_leases": None,
    "connection_counts": None,
}

_MARKER = "store_copy"
COPY_IDLE_TIMEOUT = 600.0  # seconds a copy's transaction may wait on its source
_READ_CHUNKS = 8  # chunks of a body fetched per round trip
_IDENTITIES = ("users", "mailboxes", "queue")  # tables whose ids are generated


def _selected(table: Table) -> list[str]:
    """The select list giving a table's neutral columns (a zoned time and its offset)."""
    out: list[str] = []
    for column in table.columns:
        out.append(column.name)
        if column.kind is Kind.ZONED_TIME:
            out.append(f"{column.name}_zone")
    return out


def _neutral_row(table: Table, record: Any) -> Row:
    values: list[Any] = []
    for column in table.columns:
        value = record[column.name]
        if value is not None:
            if column.kind is Kind.ZONED_TIME:
                value = join_time(value, record[f"{column.name}_zone"] or 0)
            elif column.kind is Kind.FLAGS:
                value = tuple(sorted(value))
        values.append(value)
    return tuple(values)


def _stored_row(table: Table, row: Row) -> list[Any]:
    values: list[Any] = []
    for column, value in zip(table.columns, row, strict=True):
        if column.kind is Kind.ZONED_TIME:
            values.extend(split_time(value) if value is not None else (None, None))
        elif column.kind is Kind.FLAGS and value is not None:
            values.append(list(value))
        else:
            values.append(value)
    return values


async def _chunks(
    bodies: Sequence[tuple[int, AsyncGenerator[bytes, None]]],
) -> AsyncGenerator[tuple[int, int, bytes], None]:
    """The `blob_chunks` records of bodies given as (blob id, their bytes in any pieces)."""
    for blob_id, body in bodies:
        seq, pending = 0, bytearray()
        async for piece in body:
            pending += piece
            while len(pending) >= CHUNK:
                yield blob_id, seq, bytes(pending[:CHUNK])
                del pending[:CHUNK]
                seq += 1
        if pending:
            yield blob_id, seq, bytes(pending)


class PostgresTables:
    """A PostgreSQL store (one database) as a copy's source or target."""

    def __init__(self, conn: Connection, description: str) -> None:
        self._conn = conn
        self.description = description

    @classmethod
    async def open(
        cls, settings: StoreSettings, data_dir: Path, environ: Mapping[str, str] | None = None
    ) -> PostgresTables:
        """Connect and migrate (PostgresUnavailable, one line, when it cannot be used)."""
        extra: dict[str, Any] = {} if environ is None else {"environ": environ}
        # A copy reads its other store between the statements of a batch: it gets longer
        # than a server's sessions before an idle transaction is ended.
        conn = await connect(settings, data_dir, idle_timeout=COPY_IDLE_TIMEOUT, **extra)
        try:
            with translated():
                await migrate(conn)
        except BaseException:
            conn.terminate()
            raise
        return cls(conn, f"postgresql://{parse_dsn(settings.dsn)}")

    async def close(self) -> None:
        await self._conn.close()

    # --- reading ----------------------------------------------------------

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[Row]:
        keys = ", ".join(table.key)
        where, args = "", list(after or ())
        if after is not None:
            marks = ", ".join(f"${i}" for i in range(1, len(after) + 1))
            where = f" WHERE ({keys}) > ({marks})"
        if table is BLOBS:  # a body being staged has no digest yet: not part of the store
            where = f"{where} AND" if where else " WHERE"
            where += " digest IS NOT NULL"
        sql = (
            f"SELECT {', '.join(_selected(table))} FROM {table.name}{where}"
            f" ORDER BY {keys} LIMIT ${len(args) + 1}"
        )
        with self._errors():
            records = await self._conn.fetch(sql, *args, limit)
        return [_neutral_row(table, record) for record in records]

    async def read_bodies(self, digests: Sequence[str]) -> AsyncGenerator[tuple[str, bytes], None]:
        if not digests:
            return
        with self._errors():
            async with self._conn.transaction(readonly=True):  # a cursor lives in one
                cursor = self._conn.cursor(
                    "SELECT d.digest, c.data"
                    " FROM unnest($1::text[]) WITH ORDINALITY AS d (digest, n)"
                    " JOIN blobs b ON b.digest = d.digest JOIN blob_chunks c ON c.blob_id = b.id"
                    " ORDER BY d.n, c.seq",
                    list(digests),
                    prefetch=_READ_CHUNKS,
                )
                async for record in cursor:
                    yield str(record[0]), bytes(record[1])

    async def count(self, table: Table) -> int:
        where = " WHERE digest IS NOT NULL" if table is BLOBS else ""
        with self._errors():
            return int(await self._conn.fetchval(f"SELECT count(*) FROM {table.name}{where}"))

    async def counters(self) -> Counters:
        with self._errors():
            clock = await self._conn.fetchval("SELECT last FROM uidvalidity_clock")
            queue = await self._conn.fetchval(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence('queue', 'id')::regclass)"
            )
        return Counters(int(clock or 0), int(queue or 0))

    # --- writing ----------------------------------------------------------

    async def progress(self) -> dict[str, str] | None:
        with self._errors():
            if await self._conn.fetchval("SELECT to_regclass($1)", _MARKER) is None:
                return None
            rows = await self._conn.fetch(f"SELECT item, value FROM {_MARKER}")
        return {str(row["item"]): str(row["value"]) for row in rows}

    async def begin_copy(self, source: str) -> None:
        with self._errors():
            async with self._conn.transaction():
                await self._conn.execute(
                    f"CREATE TABLE {_MARKER} (item text PRIMARY KEY, value text NOT NULL)"
                )
                await self._conn.execute(f"INSERT INTO {_MARKER} VALUES ('source', $1)", source)

    async def write_rows(self, table: Table, rows: Sequence[Row], mark: str) -> None:
        with self._errors():
            async with self._conn.transaction():
                if rows:  # COPY: the statement triggers (quota) run once per batch
                    await self._conn.copy_records_to_table(
                        table.name,
                        columns=_selected(table),
                        records=[_stored_row(table, row) for row in rows],
                    )
                await self._mark(table.name, mark)

    async def write_bodies(
        self, rows: Sequence[Row], bodies: Sequence[AsyncGenerator[bytes, None]], mark: str
    ) -> None:
        with self._errors():
            async with self._conn.transaction():
                new = await self._insert_blobs(rows)
                wanted = []
                for row, body in zip(rows, bodies, strict=True):
                    blob_id = new.get(str(row[0]))
                    if blob_id is None:  # there already, whole: a row commits with its chunks
                        await body.aclose()
                    else:
                        wanted.append((blob_id, body))
                if wanted:
                    await self._conn.copy_records_to_table(
                        "blob_chunks", columns=("blob_id", "seq", "data"), records=_chunks(wanted)
                    )
                await self._mark(BLOBS.name, mark)

    async def raise_counters(self, counters: Counters) -> None:
        with self._errors():
            async with self._conn.transaction():
                await self._conn.execute(
                    "UPDATE uidvalidity_clock SET last = greatest(last, $1, "
                    "(SELECT coalesce(max(uidvalidity), 0) FROM mailboxes))",
                    counters.last_uidvalidity,
                )
                for name in _IDENTITIES:
                    floor = counters.last_queue_id if name == "queue" else 0
                    await self._raise_identity(name, floor)

    async def finish_copy(self) -> None:
        with self._errors():
            await backfill_fetch_text(self._conn)
            await self._conn.execute(f"DROP TABLE IF EXISTS {_MARKER}")

    # --- plumbing ---------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """What the server refuses (a value it cannot take) as a CopyError of one line; a
        server that cannot be reached as StoreUnavailable."""
        try:
            with translated():
                yield
        except asyncpg.PostgresError as exc:
            raise CopyError(f"{self.description}: {' '.join(str(exc).split())}") from None

    async def _mark(self, name: str, mark: str) -> None:
        await self._conn.execute(
            f"INSERT INTO {_MARKER} (item, value) VALUES ($1, $2)"
            " ON CONFLICT (item) DO UPDATE SET value = excluded.value",
            name,
            mark,
        )

    async def _insert_blobs(self, rows: Sequence[Row]) -> dict[str, int]:
        """Insert the `blobs` rows not there yet: their digests and new ids."""
        if not rows:
            return {}
        columns = list(zip(*rows, strict=True))
        inserted = await self._conn.fetch(
            "INSERT INTO blobs (digest, size, refs, released)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::float8[])"
            " ON CONFLICT (digest) DO NOTHING RETURNING digest, id",
            *(list(column) for column in columns),
        )
        return {str(row["digest"]): int(row["id"]) for row in inserted}

    async def _raise_identity(self, table: str, floor: int) -> None:
        """Move a table's identity past its highest id and `floor`, never back."""
        sequence = await self._conn.fetchval("SELECT pg_get_serial_sequence($1, 'id')", table)
        value = await self._conn.fetchval(
            "SELECT greatest(coalesce(pg_sequence_last_value($1::regclass), 0), $2,"
            f" (SELECT coalesce(max(id), 0) FROM {table}))",
            sequence,
            floor,
        )
        if value:
            await self._conn.execute("SELECT setval($1::regclass, $2)", sequence, value)

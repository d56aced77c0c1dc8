"""Message bodies in PostgreSQL: content-addressed, reference-counted, kept in chunks.

A body is a `blobs` row named by its digest (SHA-256, hex) with its bytes in
`blob_chunks`, at most `CHUNK` octets each, so that no body is ever one value: a 50 MB
message is written as 200 rows by COPY and read back a chunk at a time through a
cursor. `refs` counts the messages and queue entries using the body; it changes in the
transactions that add and drop those users (`add_blob_ref`, `release_blobs`). A body
left with no users is released, not deleted: a sweep deletes it once the grace period
is over (`PostgresBlobStore.sweep`). A delivery that takes a reference to a released
body revives it; the row lock of that update orders it against a sweep, which checks
`released` again after the wait, so a body in use is never swept, and a body swept
first is written again by the delivery that needs it.

Rows referencing several bodies release them in digest order, after the mailbox rows
(see `poczta.store.postgres.mailboxes`), the same order in which a delivery locks them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from poczta.store.base import NotFound
from poczta.store.postgres.access import Connection, Database
from poczta.store.sweeps import SweepSchedule

__all__ = [
    "CHUNK",
    "DEFAULT_GRACE",
    "PostgresBlobStore",
    "add_blob_ref",
    "blob_digest",
    "insert_new_blob",
    "release_blobs",
]

CHUNK = 256 * 1024  # octets per blob_chunks row (the schema's limit)
DEFAULT_GRACE = 15 * 60.0  # seconds a released body stays, longer than any delivery takes
SWEEP_BATCH = 1000  # bodies per sweep transaction
_READ_CHUNKS = 16  # chunks fetched per round trip while reading
SMALL_READ = _READ_CHUNKS * CHUNK  # a body known to be no larger: read in one statement


# The row and its one chunk (none for an empty body); nothing when the digest is there.
_INSERT_ONE_CHUNK = (
    "WITH added AS (INSERT INTO blobs (digest, size, refs) VALUES ($1, $2, $3)"
    " ON CONFLICT (digest) DO NOTHING RETURNING id),"
    " chunk AS (INSERT INTO blob_chunks (blob_id, seq, data)"
    " SELECT id, 0, $4 FROM added WHERE $2 > 0)"
    " SELECT EXISTS (SELECT 1 FROM added)"
)


def blob_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _write_chunks(conn: Connection, blob_id: int, data: bytes) -> None:
    view = memoryview(data)
    await conn.copy_records_to_table(
        "blob_chunks",
        columns=("blob_id", "seq", "data"),
        records=(
            (blob_id, seq, bytes(view[start : start + CHUNK]))
            for seq, start in enumerate(range(0, len(data), CHUNK))
        ),
    )


async def _upsert(
    conn: Connection, digest: str, size: int, refs: int, released: float | None
) -> tuple[int, bool]:
    """The blob row of `digest` with `refs` more references (`released` set only when it
    still has none): (its id, whether it is new and so has no chunks yet)."""
    row = await conn.fetchrow(
        "INSERT INTO blobs (digest, size, refs, released) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (digest) DO UPDATE SET refs = blobs.refs + excluded.refs,"
        " released = CASE WHEN blobs.refs + excluded.refs = 0 THEN excluded.released END"
        " RETURNING id, xmax = 0",
        digest,
        size,
        refs,
        released,
    )
    return int(row[0]), bool(row[1])


async def add_blob_ref(
    conn: Connection, digest: str, size: int, data: bytes | None, count: int
) -> None:
    """Count `count` more references to a body, storing it first when there is none (from
    `data`; NotFound when that is None, a reference to a body never stored)."""
    blob_id, new = await _upsert(conn, digest, size, count, None)
    if new:
        if data is None:
            raise NotFound(f"no blob {digest}")
        await _write_chunks(conn, blob_id, data)


async def insert_new_blob(conn: Connection, digest: str, data: bytes, refs: int) -> bool:
    """Store a body with `refs` references when there is none of its digest yet (True),
    else change nothing (False; `add_blob_ref` then counts the references). It locks no
    row that is already there, so a delivery may call it before it locks its mailboxes.
    A body of one chunk goes in one statement with its row."""
    if len(data) <= CHUNK:
        return bool(await conn.fetchval(_INSERT_ONE_CHUNK, digest, len(data), refs, data))
    blob_id = await conn.fetchval(
        "INSERT INTO blobs (digest, size, refs) VALUES ($1, $2, $3)"
        " ON CONFLICT (digest) DO NOTHING RETURNING id",
        digest,
        len(data),
        refs,
    )
    if blob_id is None:
        return False
    await _write_chunks(conn, int(blob_id), data)
    return True


async def release_blobs(conn: Connection, digests: Sequence[tuple[str, int]], now: float) -> None:
    """Drop `count` references of each digest; a body left with none is released."""
    if not digests:
        return
    ordered = sorted(digests)
    await conn.execute(
        "UPDATE blobs b SET refs = greatest(b.refs - d.count, 0),"
        " released = CASE WHEN b.refs - d.count <= 0 THEN $3::float8 END"
        " FROM unnest($1::text[], $2::int[]) AS d(digest, count) WHERE b.digest = d.digest",
        [d for d, _ in ordered],
        [c for _, c in ordered],
        now,
    )


async def read_blob(conn: Connection, digest: str) -> bytes:
    """A body's bytes, fetched a few chunks at a time (in the caller's transaction)."""
    row = await conn.fetchrow("SELECT id, size FROM blobs WHERE digest = $1", digest)
    if row is None:
        raise NotFound(f"no blob {digest}")
    out = bytearray()
    cursor = conn.cursor(
        "SELECT data FROM blob_chunks WHERE blob_id = $1 ORDER BY seq",
        row[0],
        prefetch=_READ_CHUNKS,
    )
    async for chunk in cursor:
        out += chunk[0]
    if len(out) != row[1]:
        raise NotFound(f"blob {digest} is incomplete")
    return bytes(out)


async def read_small_blob(conn: Connection, digest: str) -> bytes:
    """A body's bytes in one statement, its own snapshot (no transaction needed): one
    round trip, for a body of at most `SMALL_READ` octets."""
    rows = await conn.fetch(
        "SELECT b.size, c.data FROM blobs b LEFT JOIN blob_chunks c ON c.blob_id = b.id"
        " WHERE b.digest = $1 ORDER BY c.seq",
        digest,
    )
    if not rows:
        raise NotFound(f"no blob {digest}")
    data = b"".join(row[1] for row in rows if row[1] is not None)
    if len(data) != rows[0][0]:
        raise NotFound(f"blob {digest} is incomplete")
    return data


async def _sweep_batch(conn: Connection, cutoff: float) -> int:
    status: str = await conn.execute(
        "DELETE FROM blobs WHERE id IN (SELECT id FROM blobs WHERE released < $1"
        " AND refs = 0 LIMIT $2 FOR UPDATE SKIP LOCKED) AND released < $1 AND refs = 0",
        cutoff,
        SWEEP_BATCH,
    )
    return int(status.rpartition(" ")[2])


class PostgresBlobStore:
    """`BlobStore` of a `PostgresStore`: the bodies in its database."""

    def __init__(self, db: Database, *, grace: float = DEFAULT_GRACE) -> None:
        self._db = db
        self.grace = grace
        self._sweeps = SweepSchedule(self.sweep, grace)

    async def put(self, data: bytes) -> str:
        """Store a body with no user yet: released now, so swept unless one comes."""
        digest = blob_digest(data)
        now = time.time()

        async def job(conn: Connection) -> None:
            blob_id, new = await _upsert(conn, digest, len(data), 0, now)
            if new:
                await _write_chunks(conn, blob_id, data)

        await self._db.write(job)
        return digest

    async def read(self, digest: str, *, size_hint: int | None = None) -> bytes:
        if size_hint is not None and size_hint <= SMALL_READ:
            return await self._db.statement(lambda conn: read_small_blob(conn, digest))

        async def job(conn: Connection) -> bytes:
            return await read_blob(conn, digest)

        return await self._db.read(job)

    async def sweep(self, now: float | None = None) -> int:
        """Delete the bodies released longer ago than the grace period, a batch per
        transaction; return how many went."""
        cutoff = (time.time() if now is None else now) - self.grace
        swept = 0
        while True:
            count = await self._db.write(lambda conn: _sweep_batch(conn, cutoff))
            swept += count
            if count < SWEEP_BATCH:
                return swept

    def sweep_later(self, delay: float | None = None) -> None:
        """Sweep in `delay` seconds (None: once bodies released now may go)."""
        self._sweeps.later(delay)

    async def stop_sweeping(self) -> None:
        """No more sweeps by itself; wait for the one running, if any."""
        await self._sweeps.stop()

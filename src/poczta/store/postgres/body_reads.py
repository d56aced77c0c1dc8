"""Several bodies in one statement: the PostgreSQL store's `BlobStore.read_many`.

A FETCH of BODY[] or a header section of many messages needs each one's bytes; read one
by one that is a round trip per message. Here the small ones (of known size, together at
most `bodies.SMALL_READ` octets) come in one statement, `WHERE digest = ANY(...)`, its
own snapshot like `read_small_blob`; a large one, or one of unknown size, is read on its
own as `read` does (a few chunks at a time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

from poczta.store.base import NotFound
from poczta.store.postgres.access import Connection, equals_any
from poczta.store.postgres.bodies import SMALL_READ, PostgresBlobStore

__all__ = ["PostgresBodies", "read_small_blobs"]


async def read_small_blobs(conn: Connection, digests: Sequence[str]) -> dict[str, bytes]:
    """The bytes of each of `digests` (NotFound when one is missing or incomplete)."""
    chosen, argument = equals_any("b.digest", digests, 1, "text")
    rows = await conn.fetch(
        "SELECT b.digest, b.size, c.data FROM blobs b LEFT JOIN blob_chunks c"
        f" ON c.blob_id = b.id WHERE {chosen} ORDER BY b.digest, c.seq",
        argument,
    )
    parts: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}
    for digest, size, data in rows:
        sizes[digest] = size
        chunks = parts.setdefault(digest, [])
        if data is not None:
            chunks.append(data)
    found: dict[str, bytes] = {}
    for digest in digests:
        if digest not in sizes:
            raise NotFound(f"no blob {digest}")
        found[digest] = b"".join(parts[digest])
        if len(found[digest]) != sizes[digest]:
            raise NotFound(f"blob {digest} is incomplete")
    return found


def _batches(bodies: Sequence[tuple[str, int | None]]) -> Iterator[list[str]]:
    """The distinct digests of known-small bodies, in runs of at most SMALL_READ octets."""
    batch: list[str] = []
    octets = 0
    seen: set[str] = set()
    for digest, size in bodies:
        if size is None or size > SMALL_READ or digest in seen:
            continue
        seen.add(digest)
        if batch and octets + size > SMALL_READ:
            yield batch
            batch, octets = [], 0
        batch.append(digest)
        octets += size
    if batch:
        yield batch


class PostgresBodies(PostgresBlobStore):
    """`PostgresBlobStore` with `read_many`."""

    async def read_many(self, bodies: Sequence[tuple[str, int | None]]) -> list[bytes]:
        """The bytes of each (digest, size hint) of `bodies`, in that order."""
        found: dict[str, bytes] = {}
        for batch in _batches(bodies):
            found.update(await self._db.statement(partial(read_small_blobs, digests=batch)))
        out = []
        for digest, size in bodies:
            if digest not in found:
                found[digest] = await self.read(digest, size_hint=size)
            out.append(found[digest])
        return out

"""The check at the end of a whole-store copy: every table and every body the same on both
sides.

Per table, both sides are read whole and compared by row count and by the sum of their
rows' digests (`row_digest`), which does not depend on the order in which each backend
lists its rows. Every body is read back on both sides and hashed against its digest.
The counters (last UIDVALIDITY, highest queue id) must be at least the source's on the
target.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from poczta.store.copy.progress import CopyProgress, NoProgress
from poczta.store.copy.tables import BLOBS, TABLES, StoreTables, Table, row_digest

__all__ = ["TableCheck", "Verification", "body_matches", "verify_copy"]

READ_BATCH = 2000  # rows read per query while comparing
_MODULUS = 1 << 256


@dataclass(frozen=True, slots=True)
class TableCheck:
    name: str
    source_rows: int
    target_rows: int
    same_rows: bool  # same count and same contents

    @property
    def ok(self) -> bool:
        return self.same_rows and self.source_rows == self.target_rows


@dataclass(slots=True)
class Verification:
    tables: list[TableCheck] = field(default_factory=list)
    bodies: int = 0
    body_octets: int = 0
    bad_bodies: list[str] = field(default_factory=list)  # "<digest> on the <side>"
    counters_ok: bool = True

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.tables) and not self.bad_bodies and self.counters_ok

    def problems(self) -> list[str]:
        found = [
            f"{c.name}: {c.source_rows} rows in the source, {c.target_rows} in the target"
            + ("" if c.source_rows != c.target_rows else " and they differ")
            for c in self.tables
            if not c.ok
        ]
        found += [f"body {bad} does not match its digest" for bad in self.bad_bodies[:5]]
        if len(self.bad_bodies) > 5:
            found.append(f"and {len(self.bad_bodies) - 5} more bodies")
        if not self.counters_ok:
            found.append("the target's UIDVALIDITY or queue id counter is behind the source's")
        return found


async def body_matches(tables: StoreTables, digest: str, size: int) -> bool:
    """Whether the body of `digest` reads back whole and matches it."""
    hasher, octets = hashlib.sha256(), 0
    try:
        async for chunk in tables.read_body(digest):
            hasher.update(chunk)
            octets += len(chunk)
    except Exception:  # missing or unreadable: it does not match
        return False
    return octets == size and hasher.hexdigest() == digest


async def _rows(tables: StoreTables, table: Table) -> AsyncIterator[tuple[object, ...]]:
    after = None
    while rows := await tables.read_rows(table, after, READ_BATCH):
        for row in rows:
            yield row
        after = table.key_of(rows[-1])


async def _summary(tables: StoreTables, table: Table, progress: CopyProgress) -> tuple[int, int]:
    count = total = 0
    async for row in _rows(tables, table):
        count += 1
        total = (total + row_digest(table, row)) % _MODULUS
        progress.advance(1)
    return count, total


async def _check_bodies(
    source: StoreTables, target: StoreTables, result: Verification, progress: CopyProgress
) -> None:
    async for row in _rows(target, BLOBS):
        digest, size = str(row[0]), int(row[1])  # type: ignore[call-overload]
        for side, tables in (("source", source), ("target", target)):
            if not await body_matches(tables, digest, size):
                result.bad_bodies.append(f"{digest} on the {side}")
        result.bodies += 1
        result.body_octets += size
        progress.advance(1, octets=size)


async def verify_copy(
    source: StoreTables, target: StoreTables, progress: CopyProgress | None = None
) -> Verification:
    """Compare the target with the source, table by table, then every body."""
    shown = progress or NoProgress()
    result = Verification()
    counts = [await source.count(table) for table in TABLES]
    shown.start("verify rows", 2 * sum(counts))
    for table in TABLES:
        source_rows, source_sum = await _summary(source, table, shown)
        target_rows, target_sum = await _summary(target, table, shown)
        result.tables.append(
            TableCheck(table.name, source_rows, target_rows, source_sum == target_sum)
        )
    shown.start("verify bodies", await target.count(BLOBS))
    await _check_bodies(source, target, result, shown)
    have, want = await target.counters(), await source.counters()
    result.counters_ok = (
        have.last_uidvalidity >= want.last_uidvalidity and have.last_queue_id >= want.last_queue_id
    )
    return result

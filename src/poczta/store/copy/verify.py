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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from poczta.store.copy.progress import CopyProgress, NoProgress
from poczta.store.copy.tables import BLOBS, TABLES, StoreTables, Table, row_digest

__all__ = ["TableCheck", "Verification", "body_digests", "verify_copy"]

READ_BATCH = 2000  # rows read per query while comparing
BODY_BATCH = 100  # bodies read per stream while comparing
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


async def body_digests(tables: StoreTables, digests: Sequence[str]) -> dict[str, tuple[int, str]]:
    """Each body's size and SHA-256 as read back (a missing one: those of no bytes)."""
    found: dict[str, tuple[int, Any]] = {}
    async for digest, chunk in tables.read_bodies(digests):
        octets, hasher = found.get(digest) or (0, hashlib.sha256())
        hasher.update(chunk)
        found[digest] = (octets + len(chunk), hasher)
    empty = (0, hashlib.sha256().hexdigest())
    return {
        digest: (found[digest][0], found[digest][1].hexdigest()) if digest in found else empty
        for digest in digests
    }


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
    after = None
    while rows := await target.read_rows(BLOBS, after, BODY_BATCH):
        expected = {str(row[0]): (int(row[1]), str(row[0])) for row in rows}
        for side, tables in (("source", source), ("target", target)):
            found = await body_digests(tables, list(expected))
            result.bad_bodies += [f"{d} on the {side}" for d in expected if found[d] != expected[d]]
        octets = sum(size for size, _ in expected.values())
        result.bodies += len(rows)
        result.body_octets += octets
        progress.advance(len(rows), octets=octets)
        after = BLOBS.key_of(rows[-1])


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

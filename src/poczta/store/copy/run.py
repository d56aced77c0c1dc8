"""A whole-store copy: every table of one store into an empty one, restartable, verified.

The tables go in a fixed order (`TABLES`), each in key order, a batch per transaction
of the target together with the table's progress in the target's `store_copy` marker.
A copy that was interrupted (killed, a lost connection) is run again with the same
source and target and goes on after the last batch committed; a body already in the
target is kept (a body is named by its digest, and stored whole or not at all). A target
is refused unless it is empty or holds the marker of a copy of the same source.

Each body is hashed as it streams from the source (a batch of bodies in one stream,
`_BodyStream`) and must match its digest. At the end the counters that must never go
back (UIDVALIDITY, queue ids) are raised on the target, everything is compared
(`verify_copy`), and only a copy found identical loses its marker and gets its derived
data rebuilt. The source must not change while it is copied (stop the server first); a
change is found by the verification.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from poczta.store.copy.progress import CopyProgress, NoProgress
from poczta.store.copy.tables import BLOBS, TABLES, CopyError, Row, StoreTables, Table
from poczta.store.copy.verify import Verification, verify_copy

__all__ = ["CopyLimits", "CopyReport", "copy_store"]

DONE = "done"


@dataclass(frozen=True, slots=True)
class CopyLimits:
    """How much one transaction of the target takes: rows, or bodies and their octets."""

    rows: int = 1000
    bodies: int = 100
    body_octets: int = 16 * 1024 * 1024


@dataclass(slots=True)
class CopyReport:
    resumed: bool = False
    copied: dict[str, int] = field(default_factory=dict)  # rows (bodies) copied by this run
    body_octets: int = 0  # of the bodies copied by this run
    verification: Verification = field(default_factory=Verification)


async def copy_store(
    source: StoreTables,
    target: StoreTables,
    *,
    limits: CopyLimits | None = None,
    progress: CopyProgress | None = None,
) -> CopyReport:
    """Copy `source` into `target`, verify, finish; CopyError when the target is refused or
    the copy differs from the source (the target then keeps its marker)."""
    shown = progress or NoProgress()
    marks = await _claim(source, target)
    copier = _Copier(source, target, limits or CopyLimits(), shown, len(marks) > 1)
    for table in TABLES:
        await copier.copy_table(table, marks.get(table.name))
    await target.raise_counters(await source.counters())
    report = copier.report
    report.verification = await verify_copy(source, target, shown)
    if not report.verification.ok:
        problems = "; ".join(report.verification.problems())
        raise CopyError(
            f"the copy in {target.description} differs from the source: {problems}"
            " (did the source change during the copy? stop the server, empty the target and"
            " copy again)"
        )
    await target.finish_copy()
    return report


async def _claim(source: StoreTables, target: StoreTables) -> dict[str, str]:
    """The target's progress marks: those of an earlier copy of the same source, or new
    ones on an empty target."""
    if source.description == target.description:
        raise CopyError(f"the target is the source itself ({source.description})")
    marks = await target.progress()
    if marks is not None:
        earlier = marks.get("source")
        if earlier != source.description:
            raise CopyError(
                f"{target.description} holds an unfinished copy of another store ({earlier}),"
                f" not of {source.description}"
            )
        return marks
    for table in TABLES:
        rows = await target.count(table)
        if rows:
            raise CopyError(
                f"{target.description} is not empty ({rows} rows in {table.name}):"
                " a store is copied only into an empty one"
            )
    await target.begin_copy(source.description)
    return {"source": source.description}


class _Copier:
    """One run's copy of the tables, batch by batch."""

    def __init__(
        self,
        source: StoreTables,
        target: StoreTables,
        limits: CopyLimits,
        progress: CopyProgress,
        resumed: bool,
    ) -> None:
        self.source = source
        self.target = target
        self.limits = limits
        self.progress = progress
        self.report = CopyReport(resumed=resumed)

    async def copy_table(self, table: Table, mark: str | None) -> None:
        """The rows of `table` after its `mark` (None: all of them; DONE: none)."""
        total = await self.source.count(table)
        if mark == DONE:
            self.progress.start(table.name, total, total)
            return
        self.progress.start(table.name, total, await self.target.count(table) if mark else 0)
        after = json.loads(mark) if mark else None
        copied = 0
        limit = self.limits.bodies if table is BLOBS else self.limits.rows
        while rows := await self.source.read_rows(table, after, limit):
            if table is BLOBS:
                await self._copy_bodies(rows)
            else:
                await self.target.write_rows(table, rows, _mark(table, rows[-1]))
                self.progress.advance(len(rows))
            copied += len(rows)
            after = table.key_of(rows[-1])
        if table is BLOBS:
            await self.target.write_bodies([], [], DONE)
        else:
            await self.target.write_rows(table, [], DONE)
        self.report.copied[table.name] = copied

    async def _copy_bodies(self, rows: list[Row]) -> None:
        """Rows of `blobs` with their bodies, in transactions of at most `body_octets` (or
        of one body, when it is bigger)."""
        start = 0
        while start < len(rows):
            end, octets = start + 1, int(rows[start][1])
            while end < len(rows) and octets + int(rows[end][1]) <= self.limits.body_octets:
                octets += int(rows[end][1])
                end += 1
            batch = rows[start:end]
            stream = _BodyStream(self.source, [str(row[0]) for row in batch])
            try:
                bodies = [
                    _checked(self.source, str(row[0]), int(row[1]), stream.body(str(row[0])))
                    for row in batch
                ]
                await self.target.write_bodies(batch, bodies, _mark(BLOBS, batch[-1]))
            finally:
                await stream.close()
            self.progress.advance(len(batch), octets=octets)
            self.report.body_octets += octets
            start = end


def _mark(table: Table, row: Row) -> str:
    return json.dumps(list(table.key_of(row)))


class _BodyStream:
    """The bodies of a batch read from the source in one stream (`read_bodies`) and handed
    out as one generator per body, to be read in the batch's order; a body the target
    does not read (it has it already) is skipped."""

    def __init__(self, source: StoreTables, digests: list[str]) -> None:
        self._place = {digest: n for n, digest in enumerate(digests)}
        self._chunks = source.read_bodies(digests)
        self._ahead: tuple[str, bytes] | None = None
        self._ended = False

    async def _peek(self) -> tuple[str, bytes] | None:
        if self._ahead is None and not self._ended:
            try:
                self._ahead = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
        return self._ahead

    async def body(self, digest: str) -> AsyncGenerator[bytes, None]:
        place = self._place[digest]
        while (item := await self._peek()) is not None:
            at = self._place[item[0]]
            if at > place:  # the next body's: this one has no more
                return
            self._ahead = None
            if at == place:
                yield item[1]

    async def close(self) -> None:
        await self._chunks.aclose()


async def _checked(
    source: StoreTables, digest: str, size: int, chunks: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """The source's body of `digest`, CopyError at its end unless it matches."""
    hasher, octets = hashlib.sha256(), 0
    try:
        async for chunk in chunks:
            hasher.update(chunk)
            octets += len(chunk)
            yield chunk
    finally:
        await chunks.aclose()
    if octets != size or hasher.hexdigest() != digest:
        raise CopyError(
            f"body {digest} in {source.description} is missing or damaged:"
            " its content does not match its digest"
        )

"""Which deliveries the PostgreSQL store writes together, and what each caller is told."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from poczta.store import StoreUnavailable
from poczta.store.base import Delivered, MailboxId
from poczta.store.postgres.batch import MAX_BATCH_OCTETS, DeliveryBatches, NewMessage


def item(n: int, octets: int = 100) -> NewMessage:
    return NewMessage(mailbox_id=1, digest=f"{n:064x}", data=b"x" * octets, row=())


class Writer:
    """Records each batch; holds the first until `release` is set; then stores all, or
    fails as told."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, items: Sequence[NewMessage]) -> list[Delivered | None]:
        self.batches.append([i.digest for i in items])
        if len(self.batches) == 1:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [Delivered(MailboxId(1), int(i.digest, 16)) for i in items]


def test_the_first_goes_alone_and_those_waiting_meanwhile_go_together() -> None:
    async def main() -> tuple[list[list[str]], list[int]]:
        writer = Writer()
        batches = DeliveryBatches(writer, max_batch=3)
        first = asyncio.ensure_future(batches.file(item(1)))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(batches.file(item(n))) for n in range(2, 7)]
        await asyncio.sleep(0)
        writer.release.set()
        done = await asyncio.gather(first, *rest)
        return writer.batches, [d.uid for d in done if d is not None]

    batches, uids = asyncio.run(main())
    assert [[int(d, 16) for d in b] for b in batches] == [[1], [2, 3, 4], [5, 6]]
    assert uids == [1, 2, 3, 4, 5, 6]  # each caller is told of its own


def test_a_batch_stops_short_of_its_octets_limit_but_always_takes_one() -> None:
    async def main() -> list[list[str]]:
        writer = Writer()
        batches = DeliveryBatches(writer)
        first = asyncio.ensure_future(batches.file(item(1)))
        await asyncio.sleep(0)
        half = MAX_BATCH_OCTETS // 2
        sizes = [half, half, 1, 2 * MAX_BATCH_OCTETS, 1]
        rest = [asyncio.ensure_future(batches.file(item(n + 2, s))) for n, s in enumerate(sizes)]
        await asyncio.sleep(0)
        writer.release.set()
        await asyncio.gather(first, *rest)
        return writer.batches

    batches = asyncio.run(main())
    assert [[int(d, 16) for d in b] for b in batches] == [[1], [2, 3], [4], [5], [6]]


@pytest.mark.parametrize(
    ("failure", "told"),
    [
        (StoreUnavailable("postgres store: gone"), StoreUnavailable),
        (asyncpg.DeadlockDetectedError("deadlock detected"), None),
    ],
)
def test_a_failed_batch_tells_each_caller(failure: BaseException, told: type | None) -> None:
    async def main() -> list[object]:
        writer = Writer(fail=failure)
        batches = DeliveryBatches(writer)
        calls = [asyncio.ensure_future(batches.file(item(n))) for n in (1, 2)]
        await asyncio.sleep(0)
        writer.release.set()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    if told is None:  # a database error of the statement: each stores on its own
        assert results == [None, None]
    else:
        assert [type(r) for r in results] == [told, told]

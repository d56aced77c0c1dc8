"""`SqliteStore`'s outbound queue and MTA-STS policy cache: each call one read or one
writer job of `poczta.store.sqlite.queue` or `poczta.store.sqlite.mta_sts`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from poczta.store.base import (
    CachedStsPolicy,
    ClaimLost,
    Outbound,
    QueueEntry,
    QueueId,
    RecipientAttempt,
)
from poczta.store.sqlite import mta_sts, queue
from poczta.store.sqlite.store_core import SqliteStoreCore

__all__ = ["SqliteQueueMethods"]


class SqliteQueueMethods(SqliteStoreCore):
    """The queue-facing part of `SqliteStore`."""

    async def enqueue(
        self, sender: str, recipients: Sequence[str], digest: str, size: int
    ) -> QueueId:
        job = queue.enqueue_job(Outbound(sender, tuple(recipients)), digest, size, _utcnow())
        queue_id: QueueId = await self._write(job)
        return queue_id

    async def list_queue(self) -> list[QueueEntry]:
        return await self._read(queue.list_queue)

    async def get_queue_entry(self, queue_id: QueueId) -> QueueEntry:
        return await self._read(lambda c: queue.get_entry(c, queue_id))

    async def claim_queue(
        self, owner: str, now: datetime, until: datetime, limit: int
    ) -> list[QueueEntry]:
        entries: list[QueueEntry] = await self._write(queue.claim_job(owner, now, until, limit))
        return entries

    async def renew_claims(
        self, owner: str, until: datetime, ids: Sequence[QueueId] | None = None
    ) -> int:
        if ids is not None and not ids:
            return 0
        job = queue.renew_claims_job(owner, until, None if ids is None else tuple(ids))
        count: int = await self._write(job)
        return count

    async def release_claims(self, prefix: str, keep: str) -> int:
        count: int = await self._write(queue.release_claims_job(prefix, keep))
        return count

    async def claim_holders(self) -> list[str]:
        return await self._read(queue.claim_holders)

    async def release_claims_of(self, owners: Sequence[str]) -> int:
        if not owners:
            return 0
        count: int = await self._write(queue.release_claims_of_job(tuple(owners)))
        return count

    async def next_queue_due(self) -> datetime | None:
        return await self._read(queue.next_due)

    async def record_attempt(
        self,
        queue_id: QueueId,
        results: Sequence[RecipientAttempt],
        now: datetime,
        *,
        finish: bool = False,
        owner: str | None = None,
    ) -> bool:
        job = queue.record_attempt_job(queue_id, tuple(results), now, finish, owner)
        done: bool | None = await (self._write_releasing(job) if finish else self._write(job))
        if done is None:
            raise ClaimLost(f"queue entry {queue_id} is not claimed by {owner}")
        return done

    async def reschedule(
        self, queue_id: QueueId, owner: str, next_attempt: datetime, error: str | None
    ) -> None:
        await self._write(queue.reschedule_job(queue_id, owner, next_attempt, error))

    async def mark_reported(
        self, queue_id: QueueId, addresses: Sequence[str], *, delay_warning: bool = False
    ) -> None:
        await self._write(queue.mark_reported_job(queue_id, tuple(addresses), delay_warning))

    async def finish_queue_entry(self, queue_id: QueueId) -> bool:
        done: bool = await self._write_releasing(queue.finish_job(queue_id))
        return done

    async def hold_queue_entry(self, queue_id: QueueId, held: bool) -> None:
        await self._write(queue.hold_job(queue_id, held))

    async def delete_queue_entry(self, queue_id: QueueId) -> None:
        await self._write_releasing(queue.delete_job(queue_id))

    async def bounce_queue_entry(self, queue_id: QueueId, text: str, now: datetime) -> None:
        await self._write(queue.bounce_job(queue_id, text, now))

    async def flush_queue(self, now: datetime, queue_id: QueueId | None = None) -> int:
        count: int = await self._write(queue.flush_job(now, queue_id))
        return count

    async def mta_sts_policy(self, domain: str) -> CachedStsPolicy | None:
        return await self._read(lambda c: mta_sts.get_policy(c, domain))

    async def save_mta_sts_policy(self, policy: CachedStsPolicy, now: datetime) -> None:
        await self._write(mta_sts.save_policy_job(policy, now))


def _utcnow() -> datetime:
    return datetime.now(UTC)

"""Delivering into the PostgreSQL store: where the copies go, then the cheapest write.

First one read that locks nothing: the target mailboxes with their users' quota
(`messages.find_targets`); under READ COMMITTED a read inside the write's transaction
would see the same, and the write's own statements count the new copies in the usage.
Then one copy of a new body of one chunk goes in one statement with the deliveries
waiting at once in this process (`batch`), which commits on its own; anything else, or
one that statement left out, is one transaction (`messages.file_message`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from poczta.message import ParsedMessage
from poczta.store.base import Accepted, DeliveryTarget, Outbound, QuotaState, UserId
from poczta.store.postgres import messages
from poczta.store.postgres.access import Database
from poczta.store.postgres.batch import DeliveryBatches, write_batches

__all__ = ["Deliveries"]


class Deliveries:
    """The deliveries of one store (one pool)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._batches = DeliveryBatches(write_batches(db))

    async def accept(
        self,
        data: bytes,
        parsed: ParsedMessage,
        internal_date: datetime,
        targets: Sequence[DeliveryTarget],
        outbound: Outbound | None,
        room: Callable[[UserId, QuotaState], bool] | None,
    ) -> tuple[Accepted, dict[UserId, QuotaState]]:
        """Store the body, the copies for `targets` (only those of users `room` finds
        room for, when given) and the queue entry for `outbound`, committed together:
        what was stored, and the quota state of each user left out."""
        filing = await self._db.statement(lambda c: messages.find_targets(c, targets, room))
        if not filing.mailbox_ids and not (outbound is not None and outbound.recipients):
            return Accepted((), None), filing.refused
        if messages.fits_one_statement(data, filing, outbound):
            done = await self._batches.file(
                messages.new_message(data, parsed, internal_date, filing)
            )
            if done is not None:
                return Accepted((done,), None), filing.refused
        accepted = await self._db.write(
            lambda c: messages.file_message(
                c, data, parsed, internal_date, filing.mailbox_ids, filing.flags, outbound
            )
        )
        return accepted, filing.refused

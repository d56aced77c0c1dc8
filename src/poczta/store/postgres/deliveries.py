"""Delivering into the PostgreSQL store: where the copies go, then the cheapest write.

The commonest delivery, one copy of a new body of one chunk and nothing queued, is one
statement with the deliveries waiting at once in this process (`batch`), which commits on
its own: it finds the target mailbox, locks it, locks its user's quota usage and checks
the quota against what the lock gives, the latest committed usage, so that two messages
arriving at once cannot both take the last room; then it writes.

Anything else, or one that statement left out, first reads the target mailboxes with their
users' quota, locking nothing (`messages.find_targets`), then is one transaction
(`messages.file_message`); under READ COMMITTED a read inside the write's transaction
would see the same, and the write's own statements count the new copies in the usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from poczta.message import ParsedMessage
from poczta.store.base import (
    Accepted,
    DeliveryTarget,
    Outbound,
    QuotaState,
    UserId,
    normalize_flags,
)
from poczta.store.postgres import messages
from poczta.store.postgres.access import Database
from poczta.store.postgres.batch import DeliveryBatches, NewMessage, NoRoom, write_batches
from poczta.store.postgres.bodies import CHUNK

if TYPE_CHECKING:
    from poczta.quota import Room

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
        room: Room | None,
    ) -> tuple[Accepted, dict[UserId, QuotaState]]:
        """Store the body, the copies for `targets` (only those of users `room` finds
        room for, when given) and the queue entry for `outbound`, committed together:
        what was stored, and the quota state of each user left out."""
        # the statement holds the copy to `room`'s rule for a message of its own size
        fits = room is None or room.octets == len(data)
        batched = len(targets) == 1 and outbound is None and len(data) <= CHUNK and fits
        if batched:
            done = await self._batches.file(_to_target(data, parsed, internal_date, targets, room))
            if isinstance(done, NoRoom):
                return Accepted((), None), {targets[0].user_id: done.state}
            if done is not None:
                return Accepted((done,), None), {}
        filing = await self._db.statement(lambda c: messages.find_targets(c, targets, room))
        if not filing.mailbox_ids and not (outbound is not None and outbound.recipients):
            return Accepted((), None), filing.refused
        if not batched and messages.fits_one_statement(data, filing, outbound):
            filed = await self._batches.file(
                messages.new_message(data, parsed, internal_date, filing)
            )
            if filed is not None and not isinstance(filed, NoRoom):
                return Accepted((filed,), None), filing.refused
        accepted = await self._db.write(
            lambda c: messages.file_message(
                c, data, parsed, internal_date, filing.mailbox_ids, filing.flags, outbound
            )
        )
        return accepted, filing.refused


def _to_target(
    data: bytes,
    parsed: ParsedMessage,
    internal_date: datetime,
    targets: Sequence[DeliveryTarget],
    room: Room | None,
) -> NewMessage:
    """The one copy for `targets[0]`, its mailbox found by the batch's statement, its
    user held to `room`'s defaults."""
    [target] = targets
    filing = messages.Filing(
        [0], [sorted(normalize_flags(target.flags))], {}
    )  # the mailbox: found later
    item = messages.new_message(data, parsed, internal_date, filing)
    quota = None if room is None else (room.defaults.storage, room.defaults.messages)
    return replace(item, mailbox_id=None, to=target, quota=quota)

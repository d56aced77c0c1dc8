"""How long a queue runner may still count on each claim it holds: its leases as last confirmed.

A claim in the store lasts until a lease time (`claimed_until`) that its runner moves
ahead while it works; once that time has passed, any runner may claim the entry again.
A runner that cannot renew (the store unreachable for longer than the lease, or the
process stopped and resumed: SIGSTOP, a paused VM) must therefore stop before another
one can start. This record is what the runner believes of each lease, updated only by
writes the store has confirmed:

* a claim confirms its entry's lease until the time the claim wrote;
* a renewal confirms the new time only for the leases that were still good, with the
  margin, when the store's answer came back: the store wrote while they were ours, as
  no other runner claims an entry before its lease has run out. A lease that may have
  run out before the answer is not extended, even if the renewal went through, since
  another runner may have taken the entry meanwhile.

A lease holds while the clock is more than `margin` before its end; the margin covers
the clocks of other nodes running somewhat ahead. A lease that no longer holds is
dropped for good: the entry is worked on again only once it is claimed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from poczta.store.base import QueueId

__all__ = ["Leases"]


class Leases:
    """The confirmed end of the lease of each entry a runner works on."""

    def __init__(self, margin: float) -> None:
        self.margin = timedelta(seconds=margin)
        self._until: dict[QueueId, datetime] = {}

    def __contains__(self, queue_id: object) -> bool:
        return queue_id in self._until

    def claimed(self, ids: Iterable[QueueId], until: datetime) -> None:
        """The store confirmed claims of `ids` lasting until `until`."""
        for queue_id in ids:
            self._until[queue_id] = until

    def holds(self, queue_id: QueueId, now: datetime) -> bool:
        """Whether the lease of `queue_id` is ours, margin included, at `now`."""
        until = self._until.get(queue_id)
        return until is not None and now < until - self.margin

    def drop(self, queue_id: QueueId) -> bool:
        """Forget the lease of `queue_id`; whether there was one."""
        return self._until.pop(queue_id, None) is not None

    def lapsed(self, now: datetime) -> list[QueueId]:
        """Drop and return the leases that no longer hold at `now`."""
        gone = [queue_id for queue_id in self._until if not self.holds(queue_id, now)]
        for queue_id in gone:
            del self._until[queue_id]
        return gone

    def held(self) -> list[QueueId]:
        return list(self._until)

    def renewed(self, ids: Iterable[QueueId], until: datetime, answered: datetime) -> None:
        """The store renewed the claims of `ids` until `until`; its answer came at
        `answered`: leases that might have run out by then keep their old end."""
        for queue_id in ids:
            if self.holds(queue_id, answered):
                self._until[queue_id] = max(until, self._until[queue_id])

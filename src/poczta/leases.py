"""What this process holds in the shared store: its name as a holder, its leases kept
alive, and the per-IP connection limit and POP3 maildrop locks counted there.

With several worker processes or nodes, a limit kept in one process's memory holds for
that process only. These keep theirs in the store's `LeaseStore` instead, so they hold
across all of them. Each process is one holder, named like a queue runner
(``NODE:HOST:PID.START:TOKEN``, `poczta.queue.claims`, whose "certainly gone" test is
used here too). Its locks and counts carry a lease (`DEFAULT_LEASE`) that `LeaseKeeper`
renews every third of it, so a process killed unseen on another machine holds nothing
once its lease has run out, and one that is gone on this machine holds nothing at once:
its rows are dropped as soon as someone needs them (or at the next renewal).

When the store cannot be reached, the connection limit fails open with a log line: a
database blip must not refuse all mail, and a session that then needs the store fails
by itself. A maildrop lock that cannot be taken fails the POP3 login (``[SYS/TEMP]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable

from poczta.logs import FloodLimit, log
from poczta.queue.claims import holder_gone, runner_name
from poczta.store.base import LeaseStore, StoreError

__all__ = ["DEFAULT_LEASE", "LeaseKeeper", "SharedConnectionLimiter"]

DEFAULT_LEASE = 60.0  # seconds
_UNAVAILABLE = FloodLimit()


class LeaseKeeper:
    """This process as a holder in `store`: its name, its leases' end, their renewal."""

    def __init__(
        self,
        store: LeaseStore,
        node: str,
        *,
        lease: float = DEFAULT_LEASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.node = node
        self.holder = runner_name(node)
        self.lease = lease
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self.on_renewal: list[Callable[[], object]] = []  # run at each renewal, e.g. retries

    def until(self) -> float:
        """The end of a lease taken now."""
        return self.clock() + self.lease

    def gone(self, holders: list[str]) -> list[str]:
        """Those of `holders` certainly not running (never this process)."""
        return [h for h in holders if h != self.holder and holder_gone(h, self.node)]

    async def renew(self) -> None:
        """Extend this process's leases; drop those of holders that are gone or ran out."""
        now = self.clock()
        await self.store.renew_leases(self.holder, now + self.lease, now - self.lease)
        gone = self.gone(await self.store.lease_holders())
        if gone:
            dropped = await self.store.drop_holders(gone)
            log("leases.dropped", holders=len(gone), rows=dropped)
        for hook in self.on_renewal:
            result = hook()
            if asyncio.iscoroutine(result):
                await result

    async def _keep(self) -> None:
        while True:
            try:
                await self.renew()
            except StoreError as exc:  # the next round tries again, well within the lease
                log("leases.renew_failed", logging.WARNING, error=exc)
            await asyncio.sleep(self.lease / 3)

    def start(self) -> None:
        """Renew now and every third of a lease until `stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        """Stop renewing and drop what this process still holds (its sessions are over)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await self.store.drop_holders([self.holder])
        except StoreError as exc:  # the lease runs out by itself
            log("leases.release_failed", logging.WARNING, error=exc)

    async def take_maildrop(self, user: str) -> bool:
        """Lock `user`'s POP3 maildrop for this process, from a gone holder too; False when
        another holder has it (StoreError when the store cannot say)."""
        current = await self.store.take_maildrop(user, self.holder, self.clock(), self.until())
        if current == self.holder:
            return True
        if not self.gone([current]):
            return False
        log("pop3.lock_taken_over", user=user, holder=current)
        return await self.store.take_maildrop_from(user, self.holder, current, self.until())

    async def release_maildrop(self, user: str) -> None:
        await self.store.release_maildrop(user, self.holder)


class SharedConnectionLimiter:
    """Open connections per client IP, counted in the store over every live holder.

    The counting is batched like a group commit: the connections accepted and ended
    while one call to the store is under way go to it together in the next
    (`LeaseStore.count_connections`), so under load a connection costs a fraction of a
    round trip, and alone it costs one, at once. When the store fails, the connections
    waiting are let in uncounted (and their closes count nothing); closes that could not
    be counted are tried again at the next renewal."""

    def __init__(self, keeper: LeaseKeeper, max_per_ip: int) -> None:
        self.keeper = keeper
        self.max_per_ip = max_per_ip
        self._uncounted: Counter[str] = Counter()  # let in while the store failed
        self._owed: Counter[str] = Counter()  # closes the store missed
        self._closed: Counter[str] = Counter()  # closes for the next call
        self._opening: list[tuple[str, asyncio.Future[bool]]] = []  # for the next call
        self._counting: asyncio.Task[None] | None = None
        keeper.on_renewal.append(self.settle)

    async def acquire(self, ip: str) -> bool:
        if await self._open(ip):
            return True
        try:
            gone = self.keeper.gone(await self.keeper.store.connection_holders(ip))
            if not gone:
                return False
            await self.keeper.store.drop_holders(gone)
        except Exception as exc:  # StoreError, or a database in a state we do not know
            _UNAVAILABLE.log("connection.limit_unavailable", logging.WARNING, ip=ip, error=exc)
            self._uncounted[ip] += 1
            return True
        return await self._open(ip)

    async def release(self, ip: str) -> None:
        if self._uncounted[ip] > 0:
            self._uncounted[ip] -= 1
            if not self._uncounted[ip]:
                del self._uncounted[ip]
            return
        self._closed[ip] += 1
        self._start_counting()

    async def settle(self) -> None:
        """Count the closes the store missed."""
        owed, self._owed = self._owed, Counter()
        if owed:
            self._closed.update(owed)
            self._start_counting()

    async def _open(self, ip: str) -> bool:
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._opening.append((ip, answer))
        self._start_counting()
        return await answer

    def _start_counting(self) -> None:
        if self._counting is None or self._counting.done():
            self._counting = asyncio.get_running_loop().create_task(self._count())

    async def _count(self) -> None:
        while self._opening or self._closed:
            opening, self._opening = self._opening, []
            closed, self._closed = self._closed, Counter()
            keeper = self.keeper
            now = keeper.clock()
            try:
                answers = await keeper.store.count_connections(
                    keeper.holder,
                    closed,
                    [ip for ip, _ in opening],
                    self.max_per_ip,
                    now,
                    now + keeper.lease,
                )
            except Exception as exc:  # StoreError, or a database in a state we do not know
                if closed:
                    _UNAVAILABLE.log("connection.release_failed", logging.WARNING, error=exc)
                    self._owed.update(closed)
                for ip, answer in opening:
                    _UNAVAILABLE.log(
                        "connection.limit_unavailable", logging.WARNING, ip=ip, error=exc
                    )
                    if not answer.cancelled():
                        self._uncounted[ip] += 1
                        answer.set_result(True)
                continue
            for (ip, answer), counted in zip(opening, answers, strict=True):
                if not answer.cancelled():
                    answer.set_result(counted)
                elif counted:  # the connection it was for is gone already
                    self._closed[ip] += 1

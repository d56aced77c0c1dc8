"""The queue runner: claims due entries, delivers them domain by domain, retries, expires, reports.

Every worker process of a server runs one. It polls the queue's next due time (at
least every `poll` seconds, at once after `wake`: the worker that queued a message
wakes its own runner), claims due entries for itself (`MailStore.claim_queue`, `batch`
at a time, whenever no more than `max_connections` are being worked on, so that a
connection finishing a message finds the next one waiting) and works on each: its
pending recipients grouped by destination domain, one `Deliverer` attempt per domain,
at most `max_per_domain` at once per domain and `max_connections` overall (a job waits
for its domain's turn before it takes one of those). Those limits are this runner's:
`poczta.queue.service` gives each worker its share of the configured ones.

Claims: a claim names its runner (`poczta.queue.claims`) and lasts until a lease time
`claim_time` ahead, which the runner renews while it works. A claim is taken in one
write transaction with the entry's due time, so no two runners ever work on one entry.
When it starts, and every `holder_check` seconds after, a runner takes back the claims
of runners that are gone (their process on this machine has ended: a worker killed and
restarted, say), so their entries are delivered again at once; a claim of a runner it
cannot look at (another machine) is taken again once its lease has run out. A live
sibling's claims are never dropped.

A lost lease: a runner that could not renew in time (the store unreachable for longer
than the lease, or the process stopped and resumed: SIGSTOP, a paused VM) may find its
entries claimed by another runner, which then tries them too. So the runner keeps the
leases the store confirmed (`poczta.queue.leases`) and works on an entry only while its
lease has more than `lease_margin` left: it starts no attempt of a domain, and no DSN or
rescheduling, once that is no longer so, and drops the entry (it is due again once its
claim runs out; this runner may claim it again too). A result is written only while the
entry is still claimed by this runner (`record_attempt(owner=...)`), so a late result
never overwrites what the new holder found; a refused one is logged as
``queue.lease_lost``, as is every lease this runner gives up. What cannot be recalled
is an SMTP transaction already under way when the lease runs out (or an attempt longer
than the margin while the renewals fail): its recipients may be delivered once more by
the next holder. Delivery stays at least once, as with every MTA (the receiving side
may recognise the copy by its Message-ID at best); the window is the margin.

After an attempt: when it left every recipient final and no DSN is owed (the usual
delivery), the entry is finished in the write of its last results, its body released;
otherwise it is read back:
recipients still pending past the lifetime fail (4.4.7); the DSNs owed go out
(`poczta.queue.reports`); an entry with nothing pending is finished, otherwise retried
after an exponential backoff (`retry_delay`). Time comes from the injected `clock`, so
tests move it instead of sleeping.

An entry whose body cannot be read is held (quarantined) with a log line, never
retried forever nor dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from poczta.logs import log
from poczta.queue.claims import holder_gone, runner_name
from poczta.queue.deliver import Deliverer, DomainJob
from poczta.queue.leases import Leases
from poczta.queue.reports import Reporter, owes_report
from poczta.queue.routes import Router
from poczta.smtp.client_events import OutboundMessage, OutboundRecipient
from poczta.store.base import (
    FAILED,
    PENDING,
    ClaimLost,
    MailStore,
    NotFound,
    QueueEntry,
    QueueId,
    QueueRecipient,
    RecipientAttempt,
    StoreError,
    normalize_address,
)

__all__ = ["QueueRunner", "RunnerSettings", "retry_delay", "utc_now"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempts: int, first: float, maximum: float) -> float:
    """Seconds before the next try after `attempts` attempts: first, doubling, at most max."""
    return min(first * 2.0 ** max(attempts - 1, 0), maximum)


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    retry_first: float = 300.0
    retry_max: float = 14_400.0
    lifetime: float = 432_000.0
    delay_warning: float = 14_400.0  # 0: never
    max_connections: int = 100
    max_per_domain: int = 20
    batch: int = 100  # entries claimed at once
    poll: float = 1.0  # seconds between looks at the queue's next due time
    claim_time: float = 600.0  # a claim's lease, renewed every third of it
    # What must be left of a lease to start work (under 2/3 of it); None: a fifth of the
    # lease, at most 120 s.
    lease_margin: float | None = None
    holder_check: float = 5.0  # seconds between looks for the claims of runners gone


MAX_LEASE_MARGIN = 120.0  # seconds: the margin of a long lease (other nodes' clocks)


class QueueRunner:
    """Delivers the queue of one store until cancelled (`run`), or what is due (`run_once`)."""

    def __init__(
        self,
        store: MailStore,
        deliverer: Deliverer,
        reporter: Reporter,
        settings: RunnerSettings,
        *,
        node: str,
        router: Router | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.deliverer = deliverer
        self.reporter = reporter
        self.settings = settings
        self.router = router
        self.clock = clock
        self.node = node
        self.owner = runner_name(node)
        margin = settings.lease_margin
        if margin is None:
            margin = min(MAX_LEASE_MARGIN, settings.claim_time / 5)
        if not 0 <= margin < settings.claim_time * 2 / 3:
            raise ValueError("lease_margin must be under two thirds of claim_time")
        self._connections = asyncio.Semaphore(settings.max_connections)
        self._domains: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._leases = Leases(margin)
        self._working: dict[QueueId, asyncio.Task[None]] = {}
        self._again: dict[QueueId, datetime] = {}  # claimed again while their task ran

    def wake(self) -> None:
        """Look at the queue now (something was queued or flushed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        taken = await self.take_back_claims()
        log("queue.runner_started", owner=self.owner, taken_back=taken)
        keeping = asyncio.ensure_future(self._keep_claims())
        try:
            while True:
                self._wake.clear()
                try:
                    if await self._claim_more():
                        continue
                    delay = await self._idle_time()
                except StoreError as exc:
                    log("queue.store_failed", logging.WARNING, error=exc)
                    delay = self.settings.poll
                with contextlib.suppress(TimeoutError):
                    # not wait_for: on Python 3.11 it loses a cancel that comes as the event is set
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            keeping.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(keeping, *self._tasks, return_exceptions=True)
            await self.deliverer.cache.close()
            with contextlib.suppress(StoreError):  # what was cut short is due again at once
                await self.store.release_claims_of([self.owner])

    async def run_once(self) -> int:
        """Claim what is due now and deliver it to the end; return how many entries."""
        now = self.clock()
        until = now + timedelta(seconds=self.settings.claim_time)
        entries = await self.store.claim_queue(self.owner, now, until, self.settings.batch)
        self._leases.claimed((entry.id for entry in entries), until)
        try:
            await asyncio.gather(*(self.process(entry) for entry in entries))
        finally:
            for entry in entries:
                self._leases.drop(entry.id)
        return len(entries)

    def _room(self) -> int:
        """Entries to claim now: a whole batch once no more than `max_connections` are
        being worked on (so the connections have the next entries waiting), else none."""
        if len(self._tasks) > self.settings.max_connections:
            return 0
        return self.settings.batch

    async def _claim_more(self) -> bool:
        free = self._room()
        if free <= 0:
            return False
        now = self.clock()
        until = now + timedelta(seconds=self.settings.claim_time)
        entries = await self.store.claim_queue(self.owner, now, until, free)
        for entry in entries:
            if entry.id in self._working:  # its attempt under the lapsed lease still runs
                self._again[entry.id] = until
            else:
                self._leases.claimed([entry.id], until)
                self._start(entry.id, self.process(entry))
        return len(entries) == free

    def _start(self, queue_id: QueueId, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        self._working[queue_id] = task
        task.add_done_callback(functools.partial(self._task_done, queue_id))

    def _task_done(self, queue_id: QueueId, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._working.get(queue_id) is task:
            del self._working[queue_id]
        self._leases.drop(queue_id)
        until = self._again.pop(queue_id, None)
        if until is not None and not task.cancelled():  # cancelled: the runner stops
            self._leases.claimed([queue_id], until)
            self._start(queue_id, self._process_again(queue_id))
        self._wake.set()

    async def _process_again(self, queue_id: QueueId) -> None:
        """An entry claimed again while an attempt under its lapsed lease still ran (that
        attempt stays without a lease, its view of the entry may be old): once it has
        ended, read what it recorded and work on the entry if it is still ours."""
        try:
            entry = await self.store.get_queue_entry(queue_id)
        except StoreError:  # gone meanwhile, or the store failed: due again later
            return
        if entry.claimed_by == self.owner:
            await self.process(entry)

    async def _idle_time(self) -> float:
        """How long to wait for work; a finished entry or `wake` ends the wait early."""
        if self._room() <= 0:
            return self.settings.poll
        due = await self.store.next_queue_due()
        if due is None:
            return self.settings.poll
        wait = (due - self.clock()).total_seconds()
        return min(max(wait, 0.01), self.settings.poll)

    async def take_back_claims(self) -> int:
        """Drop the claims of runners that are gone, so that their entries are due again
        now; return how many entries."""
        holders = await self.store.claim_holders()
        gone = [h for h in holders if h != self.owner and holder_gone(h, self.node)]
        if not gone:
            return 0
        taken = await self.store.release_claims_of(gone)
        log("queue.claims_taken_back", holders=",".join(gone), entries=taken)
        self._wake.set()
        return taken

    async def _keep_claims(self) -> None:
        """Renew this runner's leases every third of `claim_time` and give up those that
        lapsed; take back the claims of runners gone every `holder_check` seconds."""
        loop = asyncio.get_running_loop()
        renew_every = self.settings.claim_time / 3
        renew_at = loop.time() + renew_every
        while True:
            await asyncio.sleep(min(renew_every, self.settings.holder_check))
            for queue_id in self._leases.lapsed(self.clock()):
                self._lease_lost(queue_id, "not renewed in time")
            with contextlib.suppress(StoreError):
                if loop.time() >= renew_at:
                    renew_at = loop.time() + renew_every
                    await self._renew()
                await self.take_back_claims()

    async def _renew(self) -> None:
        ids = self._leases.held()
        if not ids:
            return
        until = self.clock() + timedelta(seconds=self.settings.claim_time)
        await self.store.renew_claims(self.owner, until, ids)
        self._leases.renewed(ids, until, answered=self.clock())

    def _lease_holds(self, queue_id: QueueId) -> bool:
        """Whether work on the entry may go on; a lease found lapsed is given up."""
        if self._leases.holds(queue_id, self.clock()):
            return True
        if self._leases.drop(queue_id):
            self._lease_lost(queue_id, "not renewed in time")
        return False

    def _lease_lost(self, queue_id: QueueId, reason: str) -> None:
        log("queue.lease_lost", logging.WARNING, id=queue_id, owner=self.owner, reason=reason)

    # --- one entry ---------------------------------------------------------

    async def process(self, entry: QueueEntry) -> None:
        """One attempt of every pending recipient of `entry`, then its bookkeeping, while
        this runner's lease of it holds."""
        if not self._lease_holds(entry.id):
            return
        try:
            original = await self.store.blobs.read(entry.digest, size_hint=entry.size)
        except NotFound:
            if not self._lease_holds(entry.id):
                return  # finished by the runner that took it over, perhaps
            await self.store.hold_queue_entry(entry.id, True)
            log("queue.quarantined", logging.ERROR, id=entry.id, reason="message body missing")
            return
        try:
            attempt = await self._attempt(entry, original)
            if attempt.finished or (
                _nothing_owed(entry, attempt.decided)
                and await self.store.finish_queue_entry(entry.id)
            ):
                log("queue.finished", id=entry.id, attempts=entry.attempts + 1)
                return
            if not self._lease_holds(entry.id):
                return
            await self._settle(await self.store.get_queue_entry(entry.id), original)
        except LeaseLapsed:
            return
        except ClaimLost:
            self._leases.drop(entry.id)
            self._lease_lost(entry.id, "claimed by another runner: the result was not written")
        except NotFound:
            return  # deleted meanwhile by the administrator
        except StoreError as exc:  # the claim runs out and the entry is tried again
            log("queue.store_failed", logging.WARNING, id=entry.id, error=exc)
        except Exception as exc:
            log("queue.failed", logging.ERROR, id=entry.id, error=repr(exc))
            raise

    async def _attempt(self, entry: QueueEntry, original: bytes) -> Attempt:
        """Try every pending recipient; the final states recorded, by address. The write
        that leaves every recipient final with no DSN owed also finishes the entry."""
        attempt = Attempt()
        decided = attempt.decided
        pending = entry.pending()
        if not pending or self._expired(entry):
            return attempt
        route = self.router.route(entry.sender) if self.router is not None else None
        by_domain: dict[str, list[OutboundRecipient]] = {}
        for r in pending:
            orcpt = r.orcpt.partition(";")[2] if r.orcpt else None
            recipient = OutboundRecipient(r.address, r.notify, orcpt)
            by_domain.setdefault(r.address.rpartition("@")[2], []).append(recipient)

        async def record(results: Sequence[RecipientAttempt]) -> None:
            final = (r for r in results if r.status != PENDING)
            decided.update((normalize_address(r.address), r.status) for r in final)
            # the store finishes it only if its rows agree that nothing is pending
            finish = _nothing_owed(entry, decided)
            now = self.clock()
            if await self.store.record_attempt(
                entry.id, results, now, finish=finish, owner=self.owner
            ):
                attempt.finished = True
            elif not self._lease_holds(entry.id):
                raise LeaseLapsed(entry.id)  # written, but nothing more is to be sent

        async def one(domain: str, recipients: list[OutboundRecipient]) -> None:
            message = OutboundMessage(
                entry.sender, tuple(recipients), original, ret=entry.ret, envid=entry.envid
            )
            limit = self._domains.setdefault(
                domain, asyncio.Semaphore(self.settings.max_per_domain)
            )
            # the domain's turn first: waiting for it must not hold a connection slot
            async with limit, self._connections:
                if not self._lease_holds(entry.id):
                    raise LeaseLapsed(entry.id)
                await self.deliverer.deliver(DomainJob(entry.id, domain, message, route), record)

        jobs = [one(d, rs) for d, rs in by_domain.items()]
        if len(jobs) == 1:
            await jobs[0]  # the usual case, without a task of its own
        else:  # every attempt ended before the entry is left: none runs on unseen
            for outcome in await asyncio.gather(*jobs, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
        return attempt

    def _expired(self, entry: QueueEntry) -> bool:
        return self.clock() >= entry.created + timedelta(seconds=self.settings.lifetime)

    async def _settle(self, entry: QueueEntry, original: bytes) -> None:
        pending = entry.pending()
        if pending and self._expired(entry):
            expired = [_expiry(r) for r in pending]
            await self.store.record_attempt(entry.id, expired, self.clock(), owner=self.owner)
            entry = await self.store.get_queue_entry(entry.id)
            pending = entry.pending()
        await self.reporter.final_reports(entry, original)
        if not pending:
            await self.store.finish_queue_entry(entry.id)
            log("queue.finished", id=entry.id, attempts=entry.attempts + 1)
            return
        warn_after = self.settings.delay_warning
        age = (self.clock() - entry.created).total_seconds()
        if warn_after > 0 and not entry.delay_warned and age >= warn_after:
            await self.reporter.delay_warning(entry, original)
        delay = retry_delay(entry.attempts + 1, self.settings.retry_first, self.settings.retry_max)
        due = self.clock() + timedelta(seconds=delay)
        await self.store.reschedule(entry.id, self.owner, due, pending[0].last_error)


class LeaseLapsed(Exception):
    """This runner's lease of the entry may have run out: start nothing more for it."""


@dataclass(slots=True)
class Attempt:
    """What one attempt of an entry decided: final states by address, and whether the
    entry was finished with the last of them."""

    decided: dict[str, str] = field(default_factory=dict)
    finished: bool = False


def _nothing_owed(entry: QueueEntry, decided: dict[str, str]) -> bool:
    """Whether the attempt left every recipient final with no DSN to send: then the entry
    is finished at once (the store checks again that none is pending)."""
    for r in entry.recipients:
        status = decided.get(r.address, r.status) if r.status == PENDING else r.status
        if status == PENDING or (not r.reported and owes_report(r, status)):
            return False
    return True


def _expiry(r: QueueRecipient) -> RecipientAttempt:
    last = f": {r.last_error}" if r.last_error else ""
    return RecipientAttempt(
        r.address,
        FAILED,
        f"delivery time expired{last}",
        r.reply_code,
        r.reply_enhanced if r.reply_enhanced and r.reply_enhanced[0] == "4" else "4.4.7",
        r.remote_mta,
        r.tls,
    )

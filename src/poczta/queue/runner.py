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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from poczta.logs import log
from poczta.queue.claims import holder_gone, runner_name
from poczta.queue.deliver import Deliverer, DomainJob
from poczta.queue.reports import Reporter, owes_report
from poczta.queue.routes import Router
from poczta.smtp.client_events import OutboundMessage, OutboundRecipient
from poczta.store.base import (
    FAILED,
    PENDING,
    MailStore,
    NotFound,
    QueueEntry,
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
    holder_check: float = 5.0  # seconds between looks for the claims of runners gone


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
        self._connections = asyncio.Semaphore(settings.max_connections)
        self._domains: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

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
                    await asyncio.wait_for(self._wake.wait(), delay)
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
        await asyncio.gather(*(self.process(entry) for entry in entries))
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
            task = asyncio.ensure_future(self.process(entry))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return len(entries) == free

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

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
        """Renew this runner's lease every third of `claim_time`; take back the claims of
        runners gone every `holder_check` seconds."""
        loop = asyncio.get_running_loop()
        renew_every = self.settings.claim_time / 3
        renew_at = loop.time() + renew_every
        while True:
            await asyncio.sleep(min(renew_every, self.settings.holder_check))
            with contextlib.suppress(StoreError):
                if loop.time() >= renew_at:
                    renew_at = loop.time() + renew_every
                    until = self.clock() + timedelta(seconds=self.settings.claim_time)
                    await self.store.renew_claims(self.owner, until)
                await self.take_back_claims()

    # --- one entry ---------------------------------------------------------

    async def process(self, entry: QueueEntry) -> None:
        """One attempt of every pending recipient of `entry`, then its bookkeeping."""
        try:
            original = await self.store.blobs.read(entry.digest, size_hint=entry.size)
        except NotFound:
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
            await self._settle(await self.store.get_queue_entry(entry.id), original)
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
            if await self.store.record_attempt(entry.id, results, self.clock(), finish=finish):
                attempt.finished = True

        async def one(domain: str, recipients: list[OutboundRecipient]) -> None:
            message = OutboundMessage(
                entry.sender, tuple(recipients), original, ret=entry.ret, envid=entry.envid
            )
            limit = self._domains.setdefault(
                domain, asyncio.Semaphore(self.settings.max_per_domain)
            )
            # the domain's turn first: waiting for it must not hold a connection slot
            async with limit, self._connections:
                await self.deliverer.deliver(DomainJob(entry.id, domain, message, route), record)

        jobs = [one(d, rs) for d, rs in by_domain.items()]
        if len(jobs) == 1:
            await jobs[0]  # the usual case, without a task of its own
        else:
            await asyncio.gather(*jobs)
        return attempt

    def _expired(self, entry: QueueEntry) -> bool:
        return self.clock() >= entry.created + timedelta(seconds=self.settings.lifetime)

    async def _settle(self, entry: QueueEntry, original: bytes) -> None:
        pending = entry.pending()
        if pending and self._expired(entry):
            await self.store.record_attempt(entry.id, [_expiry(r) for r in pending], self.clock())
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

"""The IMAP benchmark's scenarios: what each one sends, times and checks.

Every scenario run is timed by a `Meter`, which also takes the CPU the client's event
loop thread and the server's process tree spent meanwhile, so the report can say when
the client rather than the server was the limit. Counts are checked against what the
corpus says the mailbox holds; a wrong count is reported, not hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

from _common import TreeSample, TreeSampler, tree_cpu_seconds
from imap_client import (
    Completion,
    ImapClient,
    ImapError,
    client_tls_context,
    count_untagged,
    fetch_numbers,
    fetch_uids,
    literal_sizes,
    response_code,
    search_uids,
)
from imap_targets import HOST, MOVE_TARGET, Target
from mailgen import BODY_WORD, FIRST_DAY, SUBJECT_WORD
from poczta_postgres import DbCost

FIRST_OPEN = "UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)"
HEADERS = "DATE FROM TO CC SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES"
CLIENT_OPEN = f"UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({HEADERS})])"
SHORTEST_CPU_SPAN = 0.1  # seconds of scenario runs needed to show the server's CPU
QUIET_PCT = 5.0  # server CPU (% of one core) below which an IDLE server counts as quiet
QUIET_WINDOW_S = 1.0  # for this long
QUIET_MAX_S = 120.0  # waited at most
SINCE = (FIRST_DAY + timedelta(days=300)).date()
BEFORE = (FIRST_DAY + timedelta(days=360)).date()


@dataclass
class Run:
    wall: float
    client_cpu: float
    server_cpu: float


@dataclass
class Figures:
    """What one target measured: times in seconds, memory in bytes."""

    target: str
    runs: dict[str, list[float]] = field(default_factory=dict)  # scenario -> wall times
    client_pct: dict[str, float] = field(default_factory=dict)  # of one core
    server_pct: dict[str, float] = field(default_factory=dict)
    counts: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # found, expected
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    concurrent: dict[str, int] = field(default_factory=dict)  # peak rss, pss, procs
    idle: dict[str, float] = field(default_factory=dict)
    busy_before_pct: float = 0.0
    db_costs: list[DbCost] = field(default_factory=list)  # with --db-stats, on PostgreSQL

    def median(self, scenario: str) -> float:
        times = self.runs.get(scenario)
        return statistics.median(times) if times else 0.0


class Meter:
    """Times scenario runs and keeps, per scenario, the client's and the server's CPU."""

    def __init__(self, target: Target, figures: Figures) -> None:
        self.target = target
        self.figures = figures
        self._totals: dict[str, list[Run]] = {}

    @contextmanager
    def run(self, scenario: str) -> Iterator[None]:
        server0 = tree_cpu_seconds(self.target.roots())
        client0 = time.thread_time()
        t0 = time.perf_counter()
        yield
        wall = time.perf_counter() - t0
        client = time.thread_time() - client0
        server = tree_cpu_seconds(self.target.roots()) - server0
        self.figures.runs.setdefault(scenario, []).append(wall)
        runs = self._totals.setdefault(scenario, [])
        runs.append(Run(wall, client, server))
        total = sum(r.wall for r in runs) or 1e-9
        self.figures.client_pct[scenario] = 100 * sum(r.client_cpu for r in runs) / total
        if total >= SHORTEST_CPU_SPAN:  # below it, the kernel's 10 ms ticks say little
            self.figures.server_pct[scenario] = 100 * sum(r.server_cpu for r in runs) / total

    def check(self, what: str, found: int, expected: int | None = None) -> None:
        self.figures.counts[what] = (found, expected)
        if expected is not None and found != expected:
            self.figures.failures.append(f"{what}: found {found}, expected {expected}")


def uid_set(uids: list[int]) -> str:
    """The shortest sequence-set for `uids` ("3:7,9")."""
    parts: list[str] = []
    ordered = sorted(uids)
    start = prev = ordered[0]
    for uid in [*ordered[1:], -1]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    return ",".join(parts)


def expand_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        a, b = int(low), int(high or low)
        out += range(min(a, b), max(a, b) + 1)
    return out


def imap_date(day: date) -> str:
    return f"{day.day}-{day.strftime('%b')}-{day.year}"


def item_number(record: bytes, item: bytes) -> int:
    """The number after `item` (e.g. b"RFC822.SIZE") in the head of a FETCH response."""
    at = record.find(item + b" ", 0, 400)
    end = at = at + len(item) + 1
    while end < len(record) and 48 <= record[end] <= 57:
        end += 1
    return int(record[at:end])


class Session:
    """The scenarios of the big mailbox, on one target, with `opts`' counts."""

    def __init__(self, target: Target, opts: argparse.Namespace, figures: Figures) -> None:
        self.target = target
        self.opts = opts
        self.figures = figures
        self.meter = Meter(target, figures)
        self.context = client_tls_context() if target.tls else None
        self.rng = random.Random(7)
        self.sizes: dict[int, int] = {}  # INBOX uid -> RFC822.SIZE

    async def open(self, user: str, mailbox: str | None = "INBOX") -> ImapClient:
        client = await ImapClient.connect(HOST, self.target.port, self.context)
        await client.login(user, self.target.password)
        if mailbox is not None:
            await client.select(mailbox)
        return client

    async def login_select(self) -> None:
        plan = self.target.plan
        for _ in range(self.opts.repeat):
            with self.meter.run("login_select"):
                client = await ImapClient.connect(HOST, self.target.port, self.context)
                await client.login(plan.big_user, self.target.password)
                selected = await client.select("INBOX")
            exists = [r for r in selected.untagged if r.endswith(b" EXISTS")]
            self.meter.check("SELECT INBOX: EXISTS", int(exists[-1].split()[1]), len(plan.inbox))
            await client.logout()

    async def first_open(self, client: ImapClient) -> None:
        """The first-open FETCH: cold once (Dovecot fills its cache), then `repeat` times."""
        for run in range(self.opts.repeat + 1):
            with self.meter.run("first_open_cold" if run == 0 else "first_open"):
                done = await client.command(FIRST_OPEN)
            uids = fetch_uids(done.untagged)
            self.meter.check("first-open FETCH: distinct UIDs", len(set(uids)), self.opts.messages)
        self.sizes = {
            uid: item_number(r, b"RFC822.SIZE") for r in done.untagged for uid in fetch_uids([r])
        }

    async def searches(self, client: ImapClient) -> None:
        inbox = self.target.plan.inbox
        cases = [
            (
                "search_subject",
                f"SUBJECT {SUBJECT_WORD}",
                sum(SUBJECT_WORD in m.subject.lower() for m in inbox),
            ),
            ("search_body", f"BODY {BODY_WORD}", sum(BODY_WORD in m.text for m in inbox)),
            (
                "search_dates",
                f"SINCE {imap_date(SINCE)} BEFORE {imap_date(BEFORE)}",
                sum(SINCE <= m.internal_date.date() < BEFORE for m in inbox),
            ),
            (
                "search_flags",
                "UNSEEN FLAGGED",
                sum("\\Seen" not in m.flags and "\\Flagged" in m.flags for m in inbox),
            ),
        ]
        for scenario, criteria, expected in cases:
            for _ in range(self.opts.repeat):
                with self.meter.run(scenario):
                    done = await client.command(f"UID SEARCH {criteria}")
                self.meter.check(f"SEARCH {criteria}", len(search_uids(done.untagged)), expected)
        # The same right after a flag change (a keyword the search does not look at):
        # what a client asks after the user has read or flagged a message.
        criteria, expected = cases[-1][1:]
        for run in range(self.opts.repeat):
            touched = self.rng.choice(list(self.sizes))
            sign = "-" if run % 2 else "+"
            await client.command(f"UID STORE {touched} {sign}FLAGS.SILENT ($BenchTouched)")
            with self.meter.run("search_flags_changed"):
                done = await client.command(f"UID SEARCH {criteria}")
            found = len(search_uids(done.untagged))
            self.meter.check(f"SEARCH {criteria} after a change", found, expected)

    async def read_bodies(self, client: ImapClient) -> None:
        uids = list(self.sizes)
        for _ in range(self.opts.repeat):
            picked = self.rng.sample(uids, min(self.opts.bodies, len(uids)))
            commands = [f"UID FETCH {uid} BODY.PEEK[]" for uid in picked]
            with self.meter.run("bodies"):
                done = await client.pipeline(commands, self.opts.pipeline)
            found = literal_sizes(u for d in done for u in d.untagged)
            wrong = sum(1 for uid in picked if found.get(uid) != self.sizes[uid])
            self.meter.check("BODY.PEEK[]: bodies of the wrong size", wrong, 0)

    async def store_flags(self, client: ImapClient) -> None:
        picked = self.rng.sample(list(self.sizes), min(self.opts.changes, len(self.sizes)))
        for run in range(self.opts.repeat):
            sign = "-" if run % 2 else "+"
            commands = [f"UID STORE {uid} {sign}FLAGS (\\Flagged)" for uid in picked]
            with self.meter.run("store"):
                done = await client.pipeline(commands, self.opts.pipeline)
            self.meter.check("STORE: commands completed OK", len(done), len(picked))

    async def condstore(self, client: ImapClient) -> None:
        """A resync: one session selects with CONDSTORE, another changes 100 messages,
        the first asks what changed since the modseq it had."""
        resync = await self.open(self.target.plan.big_user, None)
        uids = list(self.sizes)
        for run in range(self.opts.repeat):
            selected = await resync.select("INBOX", condstore=True)
            modseq = next(
                (m for r in selected.untagged if (m := response_code(r, b"HIGHESTMODSEQ"))), None
            )
            if modseq is None:
                raise ImapError("SELECT (CONDSTORE) gave no HIGHESTMODSEQ")
            changed = self.rng.sample(uids, min(100, len(uids)))
            await client.pipeline(
                [f"UID STORE {u} +FLAGS.SILENT ($Bench{run})" for u in changed],
                self.opts.pipeline,
            )
            with self.meter.run("condstore"):
                done = await resync.command(
                    f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq.decode()})"
                )
            # Dovecot reports the other session's changes before the FETCH results, and
            # without UIDs (once told, it does not repeat them): count messages, not UIDs.
            changed_seen = len(fetch_numbers(done.untagged))
            self.meter.check("CHANGEDSINCE: changed messages", changed_seen, len(changed))
        await resync.logout()

    async def move(self, client: ImapClient) -> None:
        """UID MOVE of `changes` messages to Archive, moved back untimed between runs."""
        for _ in range(self.opts.repeat):
            current = search_uids((await client.command("UID SEARCH ALL")).untagged)
            before = await self._messages_in(client, MOVE_TARGET)
            picked = self.rng.sample(current, min(self.opts.changes, len(current)))
            with self.meter.run("move"):
                done = await client.command(f"UID MOVE {uid_set(picked)} {MOVE_TARGET}")
            gone = count_untagged(done.untagged, b"EXPUNGE") + _vanished(done.untagged)
            self.meter.check("MOVE: expunged from INBOX", gone, len(picked))
            after = await self._messages_in(client, MOVE_TARGET)
            self.meter.check("MOVE: arrived in Archive", after - before, len(picked))
            if not await self._move_back(client, done):
                break

    @staticmethod
    async def _messages_in(client: ImapClient, mailbox: str) -> int:
        done = await client.command(f"STATUS {mailbox} (MESSAGES)")
        status = next(r for r in done.untagged if r.startswith(b"* STATUS"))
        return item_number(status, b"MESSAGES")

    @staticmethod
    async def _move_back(client: ImapClient, done: Completion) -> bool:
        code = next(
            (c for r in [*done.untagged, done.line] if (c := response_code(r, b"COPYUID"))), None
        )
        if code is None:
            return False  # no UIDPLUS: the next run moves other messages
        moved = expand_set(code.split()[2])
        await client.select(MOVE_TARGET)
        await client.command(f"UID MOVE {uid_set(moved)} INBOX")
        await client.select("INBOX")
        return True


def _vanished(untagged: list[bytes]) -> int:
    return sum(len(expand_set(r[11:].strip())) for r in untagged if r.startswith(b"* VANISHED "))


# --------------------------------------------------------------------------- many sessions


async def concurrent_clients(session: Session) -> None:
    """`clients` users at once: login, select, headers, 10 bodies, a flag, logout."""
    opts, plan = session.opts, session.target.plan
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        client = await session.open(plan.client(i))
        done = await client.command(CLIENT_OPEN)
        uids = fetch_uids(done.untagged)
        if len(uids) != plan.client_box.count:
            session.figures.failures.append(f"client {i}: header FETCH gave {len(uids)} UIDs")
        rng = random.Random(i)
        read = rng.sample(uids, min(opts.per_client, len(uids)))
        for uid in read:
            await client.command(f"UID FETCH {uid} BODY[]")
        await client.command(f"UID STORE {read[0]} +FLAGS (\\Flagged)")
        await client.logout()
        latencies.append(time.perf_counter() - t0)

    with TreeSampler(session.target.roots) as sampler, session.meter.run("concurrent"):
        await asyncio.gather(*(one(i) for i in range(opts.clients)))
    latencies.sort()
    session.figures.latencies = latencies
    session.meter.check("concurrent clients done", len(latencies), opts.clients)
    r = sampler.result
    session.figures.concurrent = {"rss": r.peak_rss, "pss": r.peak_pss, "procs": r.peak_procs}


async def idle_connections(
    session: Session, while_idle: Callable[[int], None] | None = None
) -> None:
    """`idle` users in IDLE at once; the server tree's memory before, 2 s after the last
    one is idle, and again once the server is quiet (the same rule for every target);
    `while_idle(connections)` runs while they all idle."""
    count = session.opts.idle
    before = _tree_now(session.target.roots)
    gate = asyncio.Semaphore(session.opts.idle_ramp)
    clients: list[tuple[ImapClient, bytes]] = []

    async def one(i: int) -> None:
        async with gate:
            client = await session.open(session.target.plan.idler(i))
            clients.append((client, await client.idle()))

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    session.figures.idle["setup_s"] = time.perf_counter() - t0
    errors = [r for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(2.0)  # let the server settle (Dovecot's login processes hand over)
    after = _tree_now(session.target.roots)
    quiet_s = await _until_quiet(session.target.roots)
    quiet = _tree_now(session.target.roots)
    if while_idle is not None:
        while_idle(len(clients))
    session.meter.check("IDLE connections", len(clients), count)
    if errors:
        session.figures.failures.append(f"IDLE: first error: {errors[0]!r}")
    n = max(1, len(clients))
    session.figures.idle.update(
        connections=len(clients),
        rss_before=before.peak_rss,
        rss_after=after.peak_rss,
        pss_before=before.peak_pss,
        pss_after=after.peak_pss,
        procs_after=after.peak_procs,
        rss_per_conn=(after.peak_rss - before.peak_rss) / n,
        pss_per_conn=(after.peak_pss - before.peak_pss) / n,
        quiet_s=quiet_s,
        rss_quiet=quiet.peak_rss,
        pss_quiet=quiet.peak_pss,
        rss_quiet_conn=(quiet.peak_rss - before.peak_rss) / n,
        pss_quiet_conn=(quiet.peak_pss - before.peak_pss) / n,
    )
    await asyncio.gather(*(_leave(c, tag) for c, tag in clients), return_exceptions=True)


async def _leave(client: ImapClient, tag: bytes) -> None:
    try:
        await asyncio.wait_for(client.done(tag), 30)
        await asyncio.wait_for(client.logout(), 30)
    finally:
        client.close()


async def _until_quiet(roots: Callable[[], list[int]]) -> float:
    """Seconds until the server's tree used under `QUIET_PCT` of a core for a whole
    `QUIET_WINDOW_S`, at most `QUIET_MAX_S`: work the logins left behind (poczta's
    replacement of light password hashes, ~64 MiB while one runs) is then done."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < QUIET_MAX_S:
        cpu0 = tree_cpu_seconds(roots())
        await asyncio.sleep(QUIET_WINDOW_S)
        if tree_cpu_seconds(roots()) - cpu0 < QUIET_PCT / 100 * QUIET_WINDOW_S:
            break
    return time.perf_counter() - t0


def _tree_now(roots: Callable[[], list[int]]) -> TreeSample:
    sampler = TreeSampler(roots)
    sampler.sample_once()
    return sampler.result

"""POP3 retrieval benchmark: poczta against Dovecot's pop3d, same mail, same client.

Each target gets one user with a mailbox of N messages of about 4 KB (default
10,000) and ``--clients`` further users with ``--user-messages`` each. The
benchmark then times, with its own asyncio POP3 client over loopback:

* login + STAT (connect, TLS, USER/PASS, STAT) on the big mailbox, median of runs;
* UIDL of the whole big mailbox, median of runs;
* RETR of every message of the big mailbox, one after the other, one session;
* ``--clients`` concurrent sessions (one user each): login, UIDL, RETR of
  ``--per-client`` messages, QUIT; total wall time and per-client latency.

poczta's store is filled through its store API (one blob shared by every
recipient, deliveries in parallel for group commit); Dovecot's Maildirs are
written as files (with ``S=``/``W=`` sizes in their names, as Dovecot itself
names them) and hard-linked between users. Both servers see each mailbox once
before the clock runs (Dovecot builds its index, poczta warms its caches).

Run it with ``python bench/pop3 --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import (
    MIB,
    BenchError,
    MachineCpu,
    TreeSampler,
    free_port,
    fs_type,
    print_table,
    signals_raise,
)
from poczta_postgres import (
    BenchPostgres,
    DbCost,
    DbMeter,
    add_store_options,
    check_store_options,
    expand_poczta,
    print_costs,
)
from pop3_targets import HOST, TARGETS, Target, make_message

BUSY_PCT = 15.0  # host CPU% with the server idle above which the figures are suspect


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Figures:
    """What one target measured; times in seconds."""

    target: str
    login_stat: float = 0.0
    uidl_all: float = 0.0
    retr_all: float = 0.0
    retr_bytes: int = 0
    concurrent_wall: float = 0.0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    latency_max: float = 0.0
    peak_rss: int = 0
    peak_pss: int = 0
    peak_procs: int = 0
    busy_before_pct: float = 0.0
    db_costs: list[DbCost] = field(default_factory=list)  # with --db-stats, on PostgreSQL


# --------------------------------------------------------------------------- mail and client


class Pop3Client:
    """A minimal asyncio POP3 client: just enough commands, every reply checked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, tls: bool) -> Pop3Client:
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(host, port, ssl=context, limit=1 << 24)
        client = cls(reader, writer)
        await client.status()
        return client

    async def status(self) -> bytes:
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise BenchError(f"unexpected POP3 reply {line[:80]!r}")
        return line

    async def command(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return await self.status()

    async def multi(self, line: str) -> bytes:
        """A multi-line command; returns the body with its terminating line."""
        await self.command(line)
        first = await self.reader.readline()
        if first == b".\r\n":
            return first
        return first + await self.reader.readuntil(b"\r\n.\r\n")

    async def login(self, user: str, password: str) -> None:
        await self.command(f"USER {user}")
        await self.command(f"PASS {password}")

    async def stat(self) -> tuple[int, int]:
        count, octets = (await self.command("STAT")).split()[1:3]
        return int(count), int(octets)

    async def quit(self) -> None:
        await self.command("QUIT")
        self.writer.close()


# --------------------------------------------------------------------------- measurements


async def open_session(target: Target, user: str) -> Pop3Client:
    client = await Pop3Client.connect(HOST, target.port, target.tls)
    await client.login(user, target.password)
    return client


async def time_login_stat(target: Target, repeat: int, expected: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        client = await open_session(target, target.big_user)
        count, _ = await client.stat()
        times.append(time.perf_counter() - t0)
        await client.quit()
        if count != expected:
            raise BenchError(f"{target.name}: STAT says {count} messages, expected {expected}")
    return statistics.median(times)


async def time_uidl(target: Target, repeat: int, expected: int) -> float:
    client = await open_session(target, target.big_user)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        lines = await client.multi("UIDL")
        times.append(time.perf_counter() - t0)
        listed = lines.count(b"\r\n") - 1  # the terminating "." line has one too
        if listed != expected:
            raise BenchError(f"{target.name}: UIDL listed {listed} messages, not {expected}")
    await client.quit()
    return statistics.median(times)


async def time_retr_all(target: Target, count: int) -> tuple[float, int]:
    client = await open_session(target, target.big_user)
    total = 0
    t0 = time.perf_counter()
    for number in range(1, count + 1):
        total += len(await client.multi(f"RETR {number}"))
    elapsed = time.perf_counter() - t0
    await client.quit()
    return elapsed, total


async def one_client(target: Target, user: str, first: int, per_client: int) -> float:
    t0 = time.perf_counter()
    client = await open_session(target, user)
    await client.multi("UIDL")
    for number in range(first, first + per_client):
        await client.multi(f"RETR {number}")
    await client.quit()
    return time.perf_counter() - t0


async def time_concurrent(
    target: Target, clients: int, per_client: int, user_messages: int
) -> tuple[float, list[float]]:
    span = max(1, user_messages - per_client + 1)
    t0 = time.perf_counter()
    latencies = await asyncio.gather(
        *(
            one_client(target, target.user(i), 1 + (i * per_client) % span, per_client)
            for i in range(clients)
        )
    )
    return time.perf_counter() - t0, list(latencies)


async def warm_up(target: Target, opts: argparse.Namespace) -> None:
    """Open every mailbox once, so no first-access indexing is on the clock."""
    users = [target.big_user, *(target.user(i) for i in range(opts.clients))]
    for user in users:
        client = await open_session(target, user)
        await client.multi("UIDL")
        await client.quit()


async def measure(target: Target, opts: argparse.Namespace) -> Figures:
    figures = Figures(target.name)
    await warm_up(target, opts)
    cpu = MachineCpu()
    cpu.start()
    await asyncio.sleep(1.0)  # the server idle: is anything else using the machine?
    figures.busy_before_pct = cpu.stop()
    db = opts.postgres if opts.db_stats and target.db_backed else None
    costs = DbMeter(db)
    with costs.measure("login + STAT + QUIT", opts.repeat):
        figures.login_stat = await time_login_stat(target, opts.repeat, opts.messages)
    with costs.measure(f"UIDL of {opts.messages:,} (a login per {opts.repeat})", opts.repeat):
        figures.uidl_all = await time_uidl(target, opts.repeat, opts.messages)
    with costs.measure("RETR", opts.messages):
        figures.retr_all, figures.retr_bytes = await time_retr_all(target, opts.messages)
    figures.db_costs = costs.costs
    with TreeSampler(target.roots) as sampler:
        wall, latencies = await time_concurrent(
            target, opts.clients, opts.per_client, opts.user_messages
        )
    figures.concurrent_wall = wall
    latencies.sort()
    figures.latency_p50 = statistics.median(latencies)
    figures.latency_p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    figures.latency_max = latencies[-1]
    figures.peak_rss = sampler.result.peak_rss
    figures.peak_pss = sampler.result.peak_pss
    figures.peak_procs = sampler.result.peak_procs
    return figures


def run_target(cls: type[Target], opts: argparse.Namespace, root: Path) -> Figures:
    workdir = Path(tempfile.mkdtemp(prefix=f"pop3-{cls.name}-", dir=root))
    target = cls(opts, workdir, free_port(HOST))
    try:
        log(f"{cls.name}: filling {opts.messages} + {opts.clients} x {opts.user_messages} ...")
        t0 = time.monotonic()
        target.fill()
        log(f"{cls.name}: filled in {time.monotonic() - t0:.1f}s; starting")
        target.start()
        return _run_loop(measure(target, opts))
    finally:
        target.stop()
        if opts.keep:
            log(f"{cls.name}: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_loop(coro: object) -> Figures:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- output


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a > 0 and b > 0 else "n/a"


def report(results: Sequence[Figures], opts: argparse.Namespace) -> None:
    by_name = {r.target: r for r in results}
    names = [n for n in ("poczta", "poczta-pg", "dovecot") if n in by_name]
    compared = [n for n in names if n != "dovecot"] if "dovecot" in names else []
    rows_spec = [
        ("login + STAT (ms)", lambda f: f.login_stat, ms),
        (f"UIDL of {opts.messages:,} (ms)", lambda f: f.uidl_all, ms),
        (f"RETR of {opts.messages:,} (s)", lambda f: f.retr_all, lambda v: f"{v:,.2f}"),
        ("RETR msg/s", lambda f: opts.messages / f.retr_all if f.retr_all else 0, "{:,.0f}".format),
        (f"{opts.clients} clients wall (s)", lambda f: f.concurrent_wall, lambda v: f"{v:,.2f}"),
        ("client latency p50 (ms)", lambda f: f.latency_p50, ms),
        ("client latency p95 (ms)", lambda f: f.latency_p95, ms),
        ("client latency max (ms)", lambda f: f.latency_max, ms),
        ("peak RSS MiB (concurrent)", lambda f: f.peak_rss / MIB, "{:,.0f}".format),
        ("peak PSS MiB (concurrent)", lambda f: f.peak_pss / MIB, "{:,.0f}".format),
        ("processes (concurrent)", lambda f: f.peak_procs, "{:.0f}".format),
    ]
    headers = ["figure", *names, *(f"{n}/dovecot" for n in compared)]
    rows = []
    for label, get, fmt in rows_spec:
        values = {n: float(get(by_name[n])) for n in names}
        row: list[object] = [label, *(fmt(v) for v in values.values())]
        row += [ratio(values[n], values["dovecot"]) for n in compared]
        rows.append(row)
    print()
    print_table(headers, rows, right=range(1, len(headers)))
    for f in results:
        if f.busy_before_pct > BUSY_PCT:
            print(f"warning: the CPUs were {f.busy_before_pct:.0f}% busy before {f.target} ran")
    print(
        "\nratio = poczta / dovecot: below 1 is better for poczta on times, latencies and"
        " memory; above 1 is better on msg/s."
    )
    for f in results:
        print_costs(f"{f.target}: the database's cost of one operation (--db-stats)", f.db_costs)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000, help="messages in the big mailbox")
    p.add_argument("--size", type=int, default=4096, help="body bytes per message")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (one user each)")
    p.add_argument("--per-client", type=int, default=20, help="RETRs per concurrent client")
    p.add_argument(
        "--user-messages", type=int, default=1000, help="messages in each concurrent user's box"
    )
    p.add_argument("--repeat", type=int, default=5, help="runs of login+STAT and UIDL (median)")
    p.add_argument("--targets", default="poczta,dovecot", help="comma-separated")
    add_store_options(p)
    p.add_argument(
        "--security", choices=("tls", "plain"), default="tls", help="implicit TLS or plaintext"
    )
    p.add_argument("--workdir", type=Path, help="where the temporary directories go")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument(
        "--poczta-bin",
        default=str(Path(sys.executable).with_name("poczta")),
        help="the poczta executable",
    )
    opts = p.parse_args(argv)
    check_store_options(p, opts)
    opts.targets = expand_poczta([t for t in opts.targets.split(",") if t], opts)
    unknown = [t for t in opts.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets: {', '.join(unknown)}")
    if min(opts.messages, opts.clients, opts.per_client, opts.user_messages, opts.repeat) < 1:
        p.error("counts must be positive")
    return opts


def default_root() -> Path:
    root = Path(tempfile.gettempdir())
    return Path("/var/tmp") if fs_type(root) == "tmpfs" else root


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    root = opts.workdir or default_root()
    root.mkdir(parents=True, exist_ok=True)
    sample = make_message(0, opts.size)
    log(
        f"POP3 benchmark: {opts.messages:,} messages of {len(sample):,} bytes,"
        f" {opts.clients} clients x {opts.per_client} RETR ({opts.user_messages} messages each),"
        f" {opts.security}, work dir {root} ({fs_type(root)})"
    )
    results: list[Figures] = []
    status = 0
    opts.postgres = None
    try:
        with signals_raise():
            if any(TARGETS[name].db_backed for name in opts.targets):
                log("starting the benchmark's PostgreSQL ...")
                opts.postgres = BenchPostgres(root)
                opts.postgres.start()
            for name in opts.targets:
                try:
                    results.append(run_target(TARGETS[name], opts, root))
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    log(f"{name}: NOT MEASURED: {exc}")
                    status = 3
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        if opts.postgres is not None:
            opts.postgres.stop()
    if results:
        report(results, opts)
    if opts.json is not None:
        opts.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

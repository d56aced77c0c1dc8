"""SMTP acceptance benchmark: one run's figures (`Result`), the tables and the JSON file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import fs_type, print_table
from poczta_postgres import SHARED_BUFFERS, DbCost, print_costs
from smtp_poczta import node_workers
from smtp_targets import BUSY_PCT


@dataclass
class Result:
    target: str
    concurrency: int
    messages: int
    ok: bool = False
    seconds: float | None = None
    msgs_per_s: float | None = None
    peak_rss_mib: float | None = None
    peak_pss_mib: float | None = None
    peak_procs: int | None = None
    stored: int | None = None
    generator_cpu_pct: float | None = None  # of one core
    server_cpu_pct: float | None = None  # of one core, whole process tree
    host_cpu_pct: float | None = None  # of all cores
    note: str = ""
    start_failed: bool = False
    busy_before_pct: float | None = None  # host CPU% in the second before the load, server idle
    runs_msgs_per_s: list[float] = field(default_factory=list)  # every run, with --repeat
    db_cost: DbCost | None = None  # with --db-stats, on PostgreSQL: per accepted message


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


POCZTA_ROWS = ("poczta", "poczta-pg", "poczta-pg-2nodes")  # each gets its ratio rows
PEERS = ("aiosmtpd", "postfix")
RATIO_KEYS = ["target", "concurrency"] + [
    f"{m}_vs_{peer}" for peer in PEERS for m in ("msgs", "rss", "pss")
]
RATIO_HEADERS = ["poczta", "conc"] + [
    f"{m} vs {peer}" for peer in PEERS for m in ("msg/s", "RSS", "PSS")
]


def ratio_rows(results: list[Result], concurrencies: list[int]) -> list[list[str]]:
    by = {(r.target, r.concurrency): r for r in results if r.ok}
    measured = {r.target for r in results}
    rows = []
    for name in (n for n in POCZTA_ROWS if n in measured):
        for c in concurrencies:
            p = by.get((name, c))
            row = [name, str(c)]
            for peer in PEERS:
                q = by.get((peer, c))
                row += [
                    ratio(p and p.msgs_per_s, q and q.msgs_per_s),
                    ratio(p and p.peak_rss_mib, q and q.peak_rss_mib),
                    ratio(p and p.peak_pss_mib, q and q.peak_pss_mib),
                ]
            rows.append(row)
    return rows


def msgs_ratio_rows(
    results: list[Result], concurrencies: list[int], pairs: list[tuple[str, str]]
) -> list[list[str]]:
    """Per concurrency, msg/s of each (a, b) pair's a divided by b's."""
    by = {(r.target, r.concurrency): r for r in results if r.ok}
    rows = []
    for c in concurrencies:
        row = [str(c)]
        for a, b in pairs:
            on, off = by.get((a, c)), by.get((b, c))
            row.append(ratio(on and on.msgs_per_s, off and off.msgs_per_s))
        rows.append(row)
    return rows


def checks_ratio_rows(results: list[Result], concurrencies: list[int]) -> list[list[str]]:
    return msgs_ratio_rows(results, concurrencies, [("poczta-checks", "poczta")])


STORE_PAIRS = [("poczta-pg", "poczta"), ("poczta-pg-2nodes", "poczta-pg")]
STORE_HEADERS = ["conc", "PostgreSQL / SQLite", "2 nodes / 1 node (PostgreSQL)"]


def report(results: list[Result], opts: argparse.Namespace, skipped: dict[str, str]) -> None:
    print()
    print(
        f"SMTP acceptance: {opts.messages:,} messages of {opts.size:,}+ bytes per run, "
        f"{'several messages per connection' if opts.keepalive else 'one connection per message'}"
        f", {os.cpu_count()} CPUs, work dir on {fs_type(Path(opts.workdir))}"
    )
    workers = opts.poczta_workers
    processes = "one process per CPU core" if workers == 0 else f"{workers} process(es)"
    print(f"poczta's servers run with workers = {workers}: {processes}")
    if opts.postgres is not None:
        print(
            f"poczta-pg: {opts.postgres.version}, a cluster of the benchmark's (fsync and"
            f" synchronous_commit on, shared_buffers {SHARED_BUFFERS}), a new database per run;"
            " poczta-pg-2nodes: two servers (127.0.0.2 and .3) on one database, each with"
            f" workers = {node_workers(workers, 2)} (the CPUs shared out between them)"
        )
    print()
    rows = []
    for r in results:
        rows.append(
            [
                r.target,
                r.concurrency,
                fmt(r.msgs_per_s),
                fmt(r.seconds, 2),
                fmt(r.peak_rss_mib),
                fmt(r.peak_pss_mib),
                r.peak_procs or "-",
                "-" if r.stored is None else f"{r.stored}/{r.messages}",
                fmt(r.server_cpu_pct, 0),
                fmt(r.generator_cpu_pct, 0),
                fmt(r.host_cpu_pct, 0),
                "ok" if r.ok else "FAIL",
                r.note.splitlines()[0][:90] if r.note else "",
            ]
        )
    print_table(
        [
            "target",
            "conc",
            "msg/s",
            "secs",
            "RSS MiB",
            "PSS MiB",
            "procs",
            "stored",
            "srv CPU%",
            "gen CPU%",
            "host CPU%",
            "check",
            "note",
        ],
        rows,
        right=range(1, 11),
    )
    for name, why in skipped.items():
        print(f"\n{name}: NOT MEASURED - {why}")
    busy = [r for r in results if (r.busy_before_pct or 0) > BUSY_PCT]
    if busy:
        worst = max(r.busy_before_pct or 0 for r in busy)
        print(
            f"\nwarning: {len(busy)} run(s) started while other work kept the CPUs up to "
            f"{worst:.0f}% busy; their figures understate the servers"
        )
    print()
    print("Ratios poczta / peer (msg/s above 1: poczta faster; RSS, PSS below 1: poczta smaller)")
    print_table(RATIO_HEADERS, ratio_rows(results, opts.concurrency), right=range(2, 8))
    if {r.target for r in results} & {"poczta-pg", "poczta-pg-2nodes"}:
        print()
        print("poczta msg/s on PostgreSQL / on SQLite, and two nodes / one (below 1: slower)")
        rows = msgs_ratio_rows(results, opts.concurrency, STORE_PAIRS)
        print_table(STORE_HEADERS, rows, right=[1, 2])
    costs = [r.db_cost for r in results if r.db_cost is not None]
    print_costs("Database cost per accepted message (--db-stats)", costs)
    if opts.checks:
        print()
        print("Checks on / checks off (poczta msg/s; below 1: what the checks cost)")
        print_table(["conc", "on / off"], checks_ratio_rows(results, opts.concurrency), right=[1])
    full = [r for r in results if r.note and "\n" in r.note]
    for r in full:
        print(f"\n{r.target} c={r.concurrency}: {r.note}")


def write_json(
    path: Path, results: list[Result], opts: argparse.Namespace, skipped: dict[str, str]
) -> None:
    doc = {
        "benchmark": "smtp_accept",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "workdir_fs": fs_type(Path(opts.workdir)),
        },
        "params": {
            "messages": opts.messages,
            "body_bytes": opts.size,
            "concurrency": opts.concurrency,
            "targets": opts.targets,
            "one_connection_per_message": not opts.keepalive,
            "generator": "smtp-source",
        },
        "skipped": skipped,
        "results": [asdict(r) for r in results],
        "ratios": [
            dict(zip(RATIO_KEYS, row, strict=True)) for row in ratio_rows(results, opts.concurrency)
        ],
    }
    if opts.postgres is not None:
        doc["postgres"] = {"version": opts.postgres.version, "shared_buffers": SHARED_BUFFERS}
        doc["store_ratios"] = [
            dict(zip(["concurrency", "pg_vs_sqlite", "two_nodes_vs_one"], row, strict=True))
            for row in msgs_ratio_rows(results, opts.concurrency, STORE_PAIRS)
        ]
    if opts.checks:
        doc["checks_on_vs_off"] = [
            {"concurrency": int(c), "msgs": r}
            for c, r in checks_ratio_rows(results, opts.concurrency)
        ]
    path.write_text(json.dumps(doc, indent=2) + "\n")

"""poczta on PostgreSQL in the benchmarks: the cluster, a fresh database per run, and what
an operation costs the database.

`BenchPostgres` is the benchmark's own server (`pg_cluster.PostgresServer` in the work
directory, as the unprivileged postgres user, `fsync` and `synchronous_commit` on,
`shared_buffers` of `SHARED_BUFFERS`, pg_stat_statements loaded). Every poczta run gets
a new empty database (`store_config`), so no run sees another's mail or its statistics.

`--db-stats` measures the database's side of an operation from the server's own
counters, taken before and after (`snapshot`, `DbUsage`):

* statements and their rows, from pg_stat_statements (top-level statements of the
  `poczta` role only, so the benchmark's own queries do not count); BEGIN, COMMIT and
  ROLLBACK apart, as *transactions*;
* *round trips*: every statement is one (asyncpg sends each as its own message and
  waits for its answer), but the four statements with which asyncpg's pool resets a
  connection it takes back (`SELECT pg_advisory_unlock_all()`, `CLOSE ALL`,
  `UNLISTEN *`, `RESET ALL`) travel together, as one;
* WAL bytes and full-page images the statements wrote (pg_stat_statements), and the
  WAL flushes (`pg_stat_wal.wal_sync`: fewer than commits when concurrent commits share
  a flush);
* shared-buffer blocks the statements touched, their execution time, and the CPU of
  the whole PostgreSQL process tree.

A poczta server talks to its database when idle too (each worker's queue runner looks at
the queue every second): `background` measures that over an idle interval and `net`
takes it out of a measurement, in proportion to its duration.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import BenchError, free_port, print_table, tree_cpu_seconds
from pg_cluster import ROLE, PostgresServer, find_pg_bin

STORES = ("sqlite", "postgresql")
SHARED_BUFFERS = "512MB"  # a quarter of what a small dedicated database host would have
STATS_SETTLE = 1.2  # seconds: backends publish their WAL counters at most once a second

_COUNTERS = ("calls", "rows", "wal_bytes", "wal_fpi", "blocks", "exec_ms", "plan_ms")
_TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION", "END")
_RESET = ("SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *", "RESET ALL")
_STATEMENTS_SQL = f"""
SELECT query, sum(calls)::float8, sum(rows)::float8, sum(wal_bytes)::float8,
       sum(wal_fpi)::float8, sum(shared_blks_hit + shared_blks_read)::float8,
       sum(total_exec_time)::float8, sum(total_plan_time)::float8
FROM pg_stat_statements
WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = '{ROLE}') AND toplevel
GROUP BY query
"""


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        choices=(*STORES, "both"),
        default="sqlite",
        help="poczta's store: sqlite, postgresql (a cluster the benchmark starts), or both",
    )
    parser.add_argument(
        "--db-stats",
        action="store_true",
        help="with postgresql: print what each operation costs the database (statements,"
        " round trips, WAL)",
    )


def check_store_options(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    if opts.db_stats and "postgresql" not in chosen_stores(opts):
        parser.error("--db-stats measures PostgreSQL: add --store postgresql (or both)")


def chosen_stores(opts: argparse.Namespace) -> list[str]:
    return list(STORES) if opts.store == "both" else [opts.store]


def store_label(store: str) -> str:
    """The target name of poczta on `store`: `poczta` (SQLite) or `poczta-pg`."""
    return "poczta" if store == "sqlite" else "poczta-pg"


def expand_poczta(targets: Sequence[str], opts: argparse.Namespace) -> list[str]:
    """`targets` with `poczta` replaced by one target per store `--store` chose."""
    out: list[str] = []
    for name in targets:
        out += [store_label(s) for s in chosen_stores(opts)] if name == "poczta" else [name]
    return out


# --------------------------------------------------------------------------- the server


class BenchPostgres:
    """The benchmark's PostgreSQL: one cluster under `parent`, a database per run."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self.server: PostgresServer | None = None

    def start(self) -> None:
        binaries = find_pg_bin()
        if binaries is None:
            raise BenchError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        root = Path(parent_temp(self.parent))
        settings = {
            "shared_buffers": SHARED_BUFFERS,
            "max_connections": "400",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "top",
            "pg_stat_statements.track_utility": "on",
            "pg_stat_statements.track_planning": "on",
        }
        self.server = PostgresServer(root, binaries, free_port(), settings=settings)
        try:
            self.server.start()
            self.server.admin_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except BaseException:
            self.stop()
            raise
        version = self.server.admin_sql("SHOW server_version")[0][0]
        self.version = f"PostgreSQL {version}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.remove()
            self.server = None

    def _running(self) -> PostgresServer:
        if self.server is None:
            raise BenchError("the benchmark's PostgreSQL is not running")
        return self.server

    def store_config(self) -> str:
        """A `[store]` table for a new empty database (every node of a run shares it)."""
        server = self._running()
        dsn = server.dsn(server.new_database("bench"))
        return (
            f'\n[store]\nbackend = "postgres"\ndsn = "{dsn}"\n'
            f'password_file = "{server.password_file}"\n'
        )

    def roots(self) -> list[int]:
        server = self._running()
        return [server.proc.pid] if server.proc is not None else []

    def snapshot(self, settle: bool = False) -> DbSnapshot:
        """The counters now; `settle` first waits until backends have published theirs."""
        if settle:
            time.sleep(STATS_SETTLE)
        server = self._running()
        queries = {
            str(row[0]): dict(zip(_COUNTERS, (float(v or 0) for v in row[1:]), strict=True))
            for row in server.admin_sql(_STATEMENTS_SQL)
        }
        syncs = server.admin_sql("SELECT wal_sync FROM pg_stat_wal")[0][0]
        return DbSnapshot(
            time.monotonic(), tree_cpu_seconds(self.roots()), float(str(syncs)), queries
        )


def parent_temp(parent: Path) -> str:
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="bench-pg-", dir=parent)


# --------------------------------------------------------------------------- counters


@dataclass
class DbSnapshot:
    at: float  # time.monotonic()
    cpu: float  # seconds of CPU of the PostgreSQL process tree
    wal_syncs: float
    queries: dict[str, dict[str, float]]  # query text -> counter -> value


@dataclass
class DbUsage:
    """What happened between two snapshots: per query its counters, and the totals."""

    seconds: float
    cpu: float
    wal_syncs: float
    queries: dict[str, dict[str, float]]

    @classmethod
    def between(cls, before: DbSnapshot, after: DbSnapshot) -> DbUsage:
        queries: dict[str, dict[str, float]] = {}
        for query, counters in after.queries.items():
            old = before.queries.get(query, {})
            delta = {k: v - old.get(k, 0.0) for k, v in counters.items()}
            if delta["calls"] > 0:
                queries[query] = delta
        return cls(
            after.at - before.at,
            after.cpu - before.cpu,
            after.wal_syncs - before.wal_syncs,
            queries,
        )

    def net(self, background: DbUsage | None) -> DbUsage:
        """This usage less `background`'s, scaled to this one's duration."""
        if background is None or background.seconds <= 0:
            return self
        scale = self.seconds / background.seconds
        queries = {}
        for query, counters in self.queries.items():
            idle = background.queries.get(query, {})
            queries[query] = {
                k: max(0.0, v - scale * idle.get(k, 0.0)) for k, v in counters.items()
            }
        return DbUsage(
            self.seconds,
            max(0.0, self.cpu - scale * background.cpu),
            max(0.0, self.wal_syncs - scale * background.wal_syncs),
            queries,
        )

    def per_second(self, label: str) -> DbCost:
        return self.per(self.seconds, label)

    def per(self, operations: float, label: str) -> DbCost:
        """The cost of one of `operations` operations."""
        n = max(1e-9, operations)
        totals = dict.fromkeys(_COUNTERS, 0.0)
        transactions = resets = statements = rows = 0.0
        for query, counters in self.queries.items():
            for k in _COUNTERS:
                totals[k] += counters[k]
            kind = query_kind(query)
            if kind == "transaction":
                transactions += counters["calls"] if _starts(query) else 0.0
            elif kind == "reset":
                resets += counters["calls"] if query.startswith(_RESET[0]) else 0.0
            else:
                statements += counters["calls"]
                rows += counters["rows"]
        ends = sum(c["calls"] for q, c in self.queries.items() if query_kind(q) == "transaction")
        top = sorted(
            (
                StatementCost(
                    query,
                    c["calls"] / n,
                    c["rows"] / n,
                    c["wal_bytes"] / n,
                    c["blocks"] / n,
                    c["exec_ms"] / n,
                    c["plan_ms"] / n,
                )
                for query, c in self.queries.items()
                if query_kind(query) == "work" and c["calls"] / n >= 0.05
            ),
            key=lambda s: -s.calls,
        )
        return DbCost(
            label=label,
            operations=operations,
            transactions=transactions / n,
            statements=statements / n,
            round_trips=(statements + ends + resets) / n,
            rows=rows / n,
            wal_bytes=totals["wal_bytes"] / n,
            wal_fpi=totals["wal_fpi"] / n,
            wal_syncs=self.wal_syncs / n,
            blocks=totals["blocks"] / n,
            exec_ms=totals["exec_ms"] / n,
            cpu_ms=1000 * self.cpu / n,
            top=top,
        )


def query_kind(query: str) -> str:
    """ "transaction" (BEGIN, COMMIT, ...), "reset" (the pool's connection reset) or "work"."""
    text = query.strip().rstrip(";").strip()
    if text.upper().startswith(_TRANSACTION):
        return "transaction"
    if text in _RESET:
        return "reset"
    return "work"


def _starts(query: str) -> bool:
    return query.strip().upper().startswith(("BEGIN", "START TRANSACTION"))


@dataclass
class StatementCost:
    query: str
    calls: float
    rows: float
    wal_bytes: float
    blocks: float
    exec_ms: float
    plan_ms: float


@dataclass
class DbCost:
    """The database's side of one operation (averages over `operations`)."""

    label: str
    operations: float
    transactions: float
    statements: float  # other than BEGIN/COMMIT and the pool's reset
    round_trips: float
    rows: float
    wal_bytes: float
    wal_fpi: float
    wal_syncs: float
    blocks: float
    exec_ms: float
    cpu_ms: float
    top: list[StatementCost] = field(default_factory=list)


def background(db: BenchPostgres, seconds: float = 3.0) -> DbUsage:
    """What an idle poczta asks its database over `seconds` (its queue runners' looks)."""
    before = db.snapshot()
    time.sleep(seconds)
    return DbUsage.between(before, db.snapshot(settle=True))


class DbMeter:
    """Collects `DbCost`s of blocks of a benchmark (`with meter.measure(label, n):`);
    without a database it measures nothing."""

    def __init__(self, db: BenchPostgres | None) -> None:
        self.db = db
        self.costs: list[DbCost] = []
        self.idle = background(db) if db is not None else None

    @contextlib.contextmanager
    def measure(self, label: str, operations: int) -> Iterator[None]:
        if self.db is None:
            yield
            return
        before = self.db.snapshot()
        yield
        usage = DbUsage.between(before, self.db.snapshot(settle=True)).net(self.idle)
        self.costs.append(usage.per(operations, label))


# --------------------------------------------------------------------------- output


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def print_costs(title: str, costs: Sequence[DbCost]) -> None:
    """The costs table, then each operation's statements (those of 0.05 calls or more)."""
    if not costs:
        return
    print()
    print(title)
    rows = [
        [
            c.label,
            f"{c.operations:,.0f}",
            _num(c.transactions),
            _num(c.statements),
            _num(c.round_trips),
            _num(c.rows),
            _num(c.wal_bytes),
            _num(c.wal_fpi),
            _num(c.wal_syncs),
            _num(c.blocks),
            f"{c.exec_ms:.3f}",
            f"{c.cpu_ms:.2f}",
        ]
        for c in costs
    ]
    headers = ["operation", "n", "txns", "stmts", "round trips", "rows", "WAL B", "FPI"]
    headers += ["WAL flush", "blocks", "exec ms", "DB CPU ms"]
    print_table(headers, rows, right=range(1, len(headers)))
    print(
        "(per operation, net of what the idle server asks meanwhile; exec ms and DB CPU ms"
        " depend on the machine's load, the counts do not)"
    )
    for c in costs:
        if c.top:
            print(f"\n{c.label}: statements per operation")
            print_table(
                ["calls", "rows", "WAL B", "blocks", "exec ms", "plan ms", "statement"],
                [
                    [
                        f"{s.calls:.2f}",
                        _num(s.rows),
                        _num(s.wal_bytes),
                        _num(s.blocks),
                        f"{s.exec_ms:.3f}",
                        f"{s.plan_ms:.3f}",
                        _shorten(s.query),
                    ]
                    for s in c.top
                ],
                right=range(6),
            )


def _shorten(query: str, width: int = 110) -> str:
    text = " ".join(query.split())
    return text if len(text) <= width else text[: width - 3] + "..."

"""IMAP benchmark: poczta against Dovecot's imapd, same mail, same client, over TLS.

Both servers get the same mail (see imap_targets.py): a user with a 10,000-message
INBOX of varied, realistic ~4 KB messages and 20 folders of fewer, ``--clients`` users
with a 500-message INBOX each and ``--idle`` users with a tiny one. Then, with the
benchmark's own asyncio IMAP client (imap_client.py, uvloop when available):

* LOGIN + SELECT of the big INBOX (connect and TLS included), median of runs;
* the first-open ``UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE
  BODYSTRUCTURE)``: the first (cold) run, and the median of ``--repeat`` more;
* ``UID SEARCH`` by subject word, body word, date range (SINCE/BEFORE), UNSEEN FLAGGED;
* ``UID FETCH n BODY.PEEK[]`` of ``--bodies`` random messages, pipelined;
* ``UID STORE`` of ``--changes`` flag changes (one command each, pipelined);
* a CONDSTORE resync: SELECT (CONDSTORE), 100 changes by another session, then
  ``UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)``;
* ``UID MOVE`` of ``--changes`` messages to Archive in one command (moved back
  between runs, untimed);
* ``--clients`` users at once: login, select, header FETCH, 10 bodies, a flag, logout;
* ``--idle`` connections in IDLE: RSS and PSS of the server's process tree, per
  connection.

Every count is checked against the corpus. When poczta does not serve IMAP yet it is
reported "not available" and Dovecot is still measured.

Quick run: ``bench/imap --targets dovecot --messages 1000 --idle 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import BenchError, MachineCpu, free_port, fs_type, raise_fd_limit, signals_raise
from imap_client import ImapClient
from imap_dbcost import db_costs, idle_rate
from imap_report import report
from imap_scenarios import Figures, Session, concurrent_clients, idle_connections
from imap_targets import HOST, TARGETS, NotAvailable, Plan, Target
from mailgen import Corpus
from poczta_postgres import BenchPostgres, add_store_options, check_store_options, expand_poczta


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def warm_up(session: Session) -> None:
    """Open every mailbox of the big user and each client's INBOX once, so no
    first-access indexing is on the clock (the idle users' boxes stay cold)."""
    plan = session.target.plan
    client = await session.open(plan.big_user, None)
    for box in plan.big:
        await client.select(box.name)
    await client.logout()
    for i in range(session.opts.clients):
        await (await session.open(plan.client(i))).logout()


async def measure(target: Target, opts: argparse.Namespace) -> Figures:
    figures = Figures(target.name)
    session = Session(target, opts, figures)
    log(f"{target.name}: warming up")
    await warm_up(session)
    cpu = MachineCpu()
    cpu.start()
    await asyncio.sleep(1.0)  # the server idle: is anything else using the machine?
    figures.busy_before_pct = cpu.stop()
    await session.login_select()
    main: ImapClient = await session.open(target.plan.big_user)
    for step in (
        session.first_open,
        session.searches,
        session.read_bodies,
        session.store_flags,
        session.condstore,
        session.move,
    ):
        log(f"{target.name}: {step.__name__}")
        await step(main)
    await main.logout()
    db = opts.postgres if opts.db_stats and target.db_backed else None
    if db is not None:
        log(f"{target.name}: the database's cost of each command")
        figures.db_costs += await db_costs(session, db)
    log(f"{target.name}: {opts.clients} concurrent clients")
    await concurrent_clients(session)
    log(f"{target.name}: {opts.idle} idle connections")

    def while_idle(connections: int) -> None:
        if db is not None:
            figures.db_costs.append(idle_rate(db, connections))

    await idle_connections(session, while_idle)
    return figures


def run_target(name: str, workdir: Path, opts: argparse.Namespace, plan: Plan) -> Figures:
    target = TARGETS[name](opts, workdir, free_port(HOST), plan)
    try:
        target.probe()
        log(f"{name}: filling ...")
        t0 = time.monotonic()
        target.fill()
        log(f"{name}: filled in {time.monotonic() - t0:.1f}s; starting")
        target.start()
        return _run_loop(measure(target, opts))
    finally:
        target.stop()


def _run_loop(coro: Coroutine[Any, Any, Figures]) -> Figures:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: Figures = uvloop.run(coro)
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add = p.add_argument
    add("--messages", type=int, default=10_000, help="messages in the big INBOX")
    add("--clients", type=int, default=50, help="concurrent clients (one user each)")
    add("--user-messages", type=int, default=500, help="messages in each client's INBOX")
    add("--per-client", type=int, default=10, help="bodies each concurrent client reads")
    add("--idle", type=int, default=2000, help="connections held in IDLE")
    add("--idle-messages", type=int, default=10, help="messages in each idle user's INBOX")
    add("--idle-ramp", type=int, default=16, help="idle connections being set up at once")
    add("--bodies", type=int, default=500, help="random BODY.PEEK[] fetches")
    add("--changes", type=int, default=1000, help="messages flagged by STORE, moved by MOVE")
    add("--pipeline", type=int, default=16, help="commands in flight (1: one at a time)")
    add("--repeat", type=int, default=5, help="runs of each repeatable scenario (median)")
    add("--targets", default="poczta,dovecot", help="comma-separated: poczta, dovecot")
    add_store_options(p)
    add("--security", choices=("tls", "plain"), default="tls", help="implicit TLS or none")
    add("--workdir", type=Path, help="where the temporary directories go")
    add("--keep", action="store_true", help="keep the temporary directories")
    add("--json", type=Path, help="also write the figures to this file")
    add(
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
    counts = (opts.messages, opts.clients, opts.user_messages, opts.per_client, opts.idle)
    if min(*counts, opts.idle_messages, opts.bodies, opts.changes, opts.pipeline) < 1:
        p.error("counts must be positive")
    if opts.messages < 200:
        p.error("--messages must be at least 200 (the CONDSTORE scenario changes 100)")
    return opts


def default_root() -> Path:
    root = Path(tempfile.gettempdir())
    return Path("/var/tmp") if fs_type(root) == "tmpfs" else root


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    root = opts.workdir or default_root()
    root.mkdir(parents=True, exist_ok=True)
    fds = raise_fd_limit(opts.idle * 2 + opts.clients + 1000)
    if fds < opts.idle + opts.clients + 100:
        log(f"warning: only {fds} open files allowed; --idle {opts.idle} may not fit")
    log(
        f"IMAP benchmark: {opts.messages:,} messages + 20 folders, {opts.clients} clients"
        f" x {opts.user_messages}, {opts.idle:,} idle, {opts.security},"
        f" work dir {root} ({fs_type(root)})"
    )
    t0 = time.monotonic()
    plan = Plan(opts, Corpus())
    for box, _ in plan.holdings():
        plan.messages(box)
    log(f"corpus generated in {time.monotonic() - t0:.1f}s")
    results: list[Figures] = []
    unavailable: dict[str, str] = {}
    workdirs: list[Path] = []
    status = 0
    opts.postgres = None
    try:
        with signals_raise():
            if any(TARGETS[name].db_backed for name in opts.targets):
                log("starting the benchmark's PostgreSQL ...")
                opts.postgres = BenchPostgres(root)
                opts.postgres.start()
            for name in opts.targets:
                workdirs.append(Path(tempfile.mkdtemp(prefix=f"imap-{name}-", dir=root)))
                try:
                    results.append(run_target(name, workdirs[-1], opts, plan))
                except NotAvailable as exc:
                    log(f"{name}: NOT AVAILABLE: {exc}")
                    unavailable[name] = str(exc)
                    status = 3
                except (BenchError, OSError, subprocess.SubprocessError) as exc:
                    log(f"{name}: NOT MEASURED: {exc}")
                    unavailable[name] = f"not measured: {exc}"
                    status = 3
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        if opts.postgres is not None:
            opts.postgres.stop()
    report(results, unavailable, opts)
    if status == 0 and any(f.failures for f in results):
        status = 1
    if opts.json is not None:
        opts.json.write_text(
            json.dumps({"figures": [asdict(r) for r in results], "unavailable": unavailable})
        )
    remove_workdirs(workdirs, opts.keep)
    return status


def remove_workdirs(workdirs: list[Path], keep: bool) -> None:
    """After the report: deleting tens of thousands of files takes a while on some disks
    (and, on ext4 without a journal, slows the next server's file creation)."""
    for workdir in workdirs:
        if keep:
            log(f"kept {workdir}")
        else:
            log(f"removing {workdir} ...")
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""SMTP acceptance throughput: poczta against aiosmtpd and Postfix, and with its checks on.

For every target and every concurrency level the benchmark starts a fresh
server on a free loopback port in its own temporary directory, sends N
messages of about 4 KB with Postfix's ``smtp-source`` and measures the time
until the last "250" after DATA.  Meanwhile it samples the summed RSS (and PSS)
of the server's whole process tree from /proc.  Every target must have stored
each message durably (fsync) before answering 250; afterwards the stored
messages are counted and a run whose count differs from the number sent is
marked FAIL. poczta runs with its checks of incoming mail off, like its peers; with
``--checks`` it runs a second time with them on (answers from a local dnsmasq) and the
report adds the ratio checks-on / checks-off.

Run it with ``python bench/smtp_accept --help`` for the options.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    MIB,
    BenchError,
    MachineCpu,
    TreeSampler,
    ensure_deb,
    free_port,
    fs_type,
    signals_raise,
    tree_cpu_seconds,
    wait_port,
)
from poczta_postgres import (
    BenchPostgres,
    DbUsage,
    add_store_options,
    check_store_options,
    chosen_stores,
    store_label,
)
from smtp_poczta import PocztaChecksTarget, PocztaNodesTarget, PocztaPgTarget, PocztaTarget
from smtp_report import Result, fmt, report, write_json
from smtp_targets import (
    HELO,
    HOST,
    POSTFIX_DEBCONF,
    RCPT,
    SENDER,
    TARGETS,
    AiosmtpdTarget,
    PostfixTarget,
    Target,
    log,
)

TARGET_CLASSES: dict[str, type[Target]] = {
    "poczta": PocztaTarget,
    "poczta-pg": PocztaPgTarget,
    "poczta-pg-2nodes": PocztaNodesTarget,
    "aiosmtpd": AiosmtpdTarget,
    "postfix": PostfixTarget,
    "poczta-checks": PocztaChecksTarget,
}


# --------------------------------------------------------------------------- one run


def smtp_source_cmd(
    opts: argparse.Namespace, address: tuple[str, int], concurrency: int, messages: int
) -> list[str]:
    cmd = [
        opts.smtp_source,
        "-s",
        str(concurrency),
        "-m",
        str(messages),
        "-l",
        str(opts.size),
        "-M",
        HELO,
        "-f",
        SENDER,
        "-t",
        RCPT,
    ]
    if opts.keepalive:
        cmd.append("-d")  # several messages per connection instead of one connection each
    return [*cmd, f"{address[0]}:{address[1]}"]


def generator_cmds(
    opts: argparse.Namespace, endpoints: list[tuple[str, int]], concurrency: int
) -> list[list[str]]:
    """One smtp-source per endpoint, the messages and the sessions shared out evenly."""
    k = len(endpoints)
    return [
        smtp_source_cmd(
            opts,
            address,
            max(1, concurrency // k + (i < concurrency % k)),
            opts.messages // k + (i < opts.messages % k),
        )
        for i, address in enumerate(endpoints)
    ]


def run_generator(cmds: list[list[str]], timeout: float, errlog: Path) -> tuple[float, float, int]:
    """Run the load generators at once; return (wall seconds until the last one exited,
    their CPU seconds, the first non-zero exit status or 0)."""
    procs: list[subprocess.Popen[bytes]] = []
    with open(errlog, "wb") as err:
        t0 = time.perf_counter()
        for cmd in cmds:
            procs.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
                )
            )
    timer = threading.Timer(timeout, lambda: [p.kill() for p in procs])
    timer.start()
    cpu, codes = 0.0, []
    try:
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
            codes.append(proc.returncode)
        wall = time.perf_counter() - t0
    finally:
        timer.cancel()
        for proc in procs:
            if proc.returncode is None:  # interrupted: do not leave it running
                proc.kill()
                proc.wait()
    return wall, cpu, next((c for c in codes if c != 0), 0)


def run_one(opts: argparse.Namespace, cls: type[Target], concurrency: int) -> Result:
    res = Result(cls.name, concurrency, opts.messages)
    workdir = Path(tempfile.mkdtemp(prefix=f"{cls.name}-c{concurrency}-", dir=opts.workdir))
    target = cls(opts, workdir, free_port(HOST))
    try:
        try:
            try:
                target.start()
                for host, port in target.endpoints():
                    wait_port(host, port, timeout=opts.start_timeout, alive=target.alive)
            except BenchError:
                res.start_failed = True
                raise
            rc, notes = measure(opts, target, res, workdir)
        finally:
            target.stop()
        res.stored = target.stored()
        if res.stored != opts.messages:
            notes.append(f"stored {res.stored} of {opts.messages}")
        res.ok = rc == 0 and res.stored == opts.messages
        res.note = "; ".join(notes)
    except BenchError as e:
        res.note = str(e)
        tail = getattr(target, "log_tail", lambda n: "")(5)
        if tail:
            res.note += "\n  server log: " + "\n              ".join(tail.splitlines())
    finally:
        if opts.keep:
            log(f"  kept {workdir}")
        else:
            # Removed only after the last run: see remove_workdirs.
            FINISHED_WORKDIRS.append(workdir)
    return res


def measure(
    opts: argparse.Namespace, target: Target, res: Result, workdir: Path
) -> tuple[int, list[str]]:
    """One load on a started server: fills `res`; the generator's status and the notes."""
    db = opts.postgres if opts.db_stats and target.db_backed else None
    idle_from = db.snapshot() if db else None
    cpu = MachineCpu()
    cpu.start()  # other work on the machine distorts the figures: look for it
    time.sleep(1.0)
    res.busy_before_pct = round(cpu.stop(), 1)
    before = db.snapshot() if db else None
    cmds = generator_cmds(opts, target.endpoints(), res.concurrency)
    with TreeSampler(target.roots, interval=opts.sample_interval) as sampler:
        srv0 = tree_cpu_seconds(target.roots())
        cpu.start()
        wall, gen_cpu, rc = run_generator(cmds, opts.timeout, workdir / "smtp-source.err")
        res.host_cpu_pct = round(cpu.stop(), 1)
        srv1 = tree_cpu_seconds(target.roots())
    if db and idle_from and before:
        idle = DbUsage.between(idle_from, before)
        usage = DbUsage.between(before, db.snapshot(settle=True)).net(idle)
        res.db_cost = usage.per(opts.messages, f"{target.name} c={res.concurrency}")
    res.seconds = round(wall, 3)
    res.msgs_per_s = round(opts.messages / wall, 1)
    res.generator_cpu_pct = round(100 * gen_cpu / wall, 1)
    res.server_cpu_pct = round(100 * (srv1 - srv0) / wall, 1)
    res.peak_rss_mib = round(sampler.result.peak_rss / MIB, 1)
    res.peak_pss_mib = round(sampler.result.peak_pss / MIB, 1)
    res.peak_procs = sampler.result.peak_procs
    notes = []
    if rc != 0:
        err = (workdir / "smtp-source.err").read_text(errors="replace").strip()
        notes.append(f"smtp-source exit {rc}: {err[-300:]}")
    note = target.wait_stored(opts.messages, opts.delivery_timeout)
    if note:
        notes.append(note)
    return rc, notes


# Work dirs of finished runs. Removing one run's ten thousand files right before the
# next run would slow that next server down: ext4 without a journal skips inodes freed
# in the last 5 to 35 seconds when it allocates new ones, so every file the next server
# creates would first scan past the freshly deleted ones.
FINISHED_WORKDIRS: list[Path] = []


def remove_workdirs() -> None:
    while FINISHED_WORKDIRS:
        shutil.rmtree(FINISHED_WORKDIRS.pop(), ignore_errors=True)


def run_repeated(opts: argparse.Namespace, cls: type[Target], concurrency: int) -> Result:
    """``--repeat`` fresh runs; the row shown is the run with the median msg/s."""
    runs: list[Result] = []
    for i in range(opts.repeat):
        r = run_one(opts, cls, concurrency)
        if r.start_failed:
            return r
        if opts.repeat > 1:
            log(f"  run {i + 1}/{opts.repeat}: {fmt(r.msgs_per_s)} msg/s")
        runs.append(r)
    ranked = sorted(runs, key=lambda r: r.msgs_per_s or 0.0)
    best = ranked[len(ranked) // 2]
    best.runs_msgs_per_s = [r.msgs_per_s or 0.0 for r in runs]
    best.ok = all(r.ok for r in runs)
    notes = [r.note for r in runs if r.note]
    if len(runs) > 1:
        notes.append("runs " + " ".join(f"{v:.0f}" for v in best.runs_msgs_per_s) + " msg/s")
    best.note = "; ".join(dict.fromkeys(notes))
    return best


# --------------------------------------------------------------------------- main


def int_list(s: str) -> list[int]:
    vals = [int(x) for x in s.split(",") if x.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("expected positive integers like 1,10,50")
    return vals


def target_list(s: str) -> list[str]:
    vals = [x.strip().lower() for x in s.split(",") if x.strip()]
    bad = [v for v in vals if v not in TARGETS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"targets are {', '.join(TARGETS)}")
    return vals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="smtp_accept",
        description="Measure SMTP acceptance throughput (messages/s until the 250 after DATA) "
        "and peak memory of poczta, aiosmtpd and Postfix.",
    )
    p.add_argument("--messages", type=int, default=10_000, help="messages per run (10000)")
    p.add_argument(
        "--concurrency",
        type=int_list,
        default=[1, 10, 50],
        help="comma-separated parallel sessions (1,10,50)",
    )
    p.add_argument(
        "--targets",
        type=target_list,
        default=list(TARGETS),
        help="comma-separated subset of poczta,aiosmtpd,postfix (all)",
    )
    add_store_options(p)
    p.add_argument(
        "--nodes",
        type=int_list,
        default=[1],
        help="with --store postgresql: 1, 2 (two poczta servers on 127.0.0.2 and .3 sharing"
        " one database, the sessions split between them) or 1,2 (1)",
    )
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per cell; the median one is shown (1)"
    )
    p.add_argument("--size", type=int, default=4096, help="body bytes per message (4096)")
    p.add_argument(
        "--keepalive",
        action="store_true",
        help="send several messages per connection (smtp-source -d)",
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="parent of the temporary server dirs (system temp dir; must not be "
        "tmpfs, or fsync costs nothing)",
    )
    p.add_argument(
        "--checks",
        action="store_true",
        help="also measure poczta with the checks of incoming mail on (SPF, DKIM, DMARC, "
        "blocklists, greylisting; DNS from a local dnsmasq) and print on/off ratios",
    )
    p.add_argument(
        "--uncached-negatives",
        action="store_true",
        help="with --checks: DNS answers NXDOMAIN without an SOA, so nothing negative can be "
        "cached and every message asks the blocklists again (a worst case)",
    )
    p.add_argument("--keep", action="store_true", help="keep the server dirs for inspection")
    p.add_argument("--poczta-bin", type=Path, help="poczta executable (next to this python)")
    p.add_argument(
        "--poczta-workers",
        type=int,
        default=0,
        help="poczta's `workers` setting (0: one process per CPU core, the default here)",
    )
    p.add_argument(
        "--sample-interval", type=float, default=0.1, help="seconds between memory samples (0.1)"
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per run (900)")
    p.add_argument(
        "--delivery-timeout",
        type=float,
        default=600,
        help="seconds Postfix may take to deliver the accepted mail (600)",
    )
    p.add_argument(
        "--start-timeout", type=float, default=30, help="seconds a server may take to listen (30)"
    )
    opts = p.parse_args(argv)
    if opts.messages < 1 or opts.repeat < 1:
        p.error("--messages and --repeat must be positive")
    check_store_options(p, opts)
    if not set(opts.nodes) <= {1, 2}:
        p.error("--nodes takes 1, 2 or 1,2")
    if 2 in opts.nodes and "postgresql" not in chosen_stores(opts):
        p.error("two nodes share a PostgreSQL database: add --store postgresql (or both)")
    if opts.workdir is None:
        tmp = Path(tempfile.gettempdir())
        opts.workdir = str(tmp if fs_type(tmp) != "tmpfs" else Path("/var/tmp"))
    return opts


def target_names(opts: argparse.Namespace) -> list[str]:
    """The targets to measure, in order: `poczta` becomes one row per store and node
    count chosen, followed by its checks-on twin with --checks."""
    names: list[str] = []
    for name in opts.targets:
        if name != "poczta":
            names.append(name)
            continue
        stores = chosen_stores(opts)
        names += [store_label(s) for s in stores if s == "sqlite" or 1 in opts.nodes]
        if "postgresql" in stores and 2 in opts.nodes:
            names.append("poczta-pg-2nodes")
        if opts.checks:
            names.append("poczta-checks")
    return names


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.postgres = None
    if fs_type(Path(opts.workdir)) in ("tmpfs", "ramfs"):
        log(f"warning: {opts.workdir} is in memory; fsync is free there")
    results: list[Result] = []
    skipped: dict[str, str] = {}
    interrupted = False
    try:
        with signals_raise():
            # smtp-source (the load generator) comes with Postfix, one of the peers.
            ensure_deb("postfix", POSTFIX_DEBCONF, log=log)
            found = shutil.which("smtp-source", path=f"/usr/sbin:{os.environ.get('PATH', '')}")
            if found is None:
                raise BenchError("smtp-source not found although postfix is installed")
            opts.smtp_source = found
            names = target_names(opts)
            if any(TARGET_CLASSES[n].db_backed for n in names):
                log("starting the benchmark's PostgreSQL ...")
                opts.postgres = BenchPostgres(Path(opts.workdir))
                opts.postgres.start()
            for name in names:
                cls = TARGET_CLASSES[name]
                why = cls.unavailable(opts)
                if why:
                    skipped[name] = why
                    log(f"{name}: NOT MEASURED - {why}")
                    continue
                for c in opts.concurrency:
                    log(f"{name}: {opts.messages} messages at concurrency {c} ...")
                    r = run_repeated(opts, cls, c)
                    if r.start_failed:  # would fail the same way at every concurrency
                        skipped[name] = f"could not start it: {r.note}"
                        log(f"{name}: NOT MEASURED - {skipped[name]}")
                        break
                    log(
                        f"  {fmt(r.msgs_per_s)} msg/s, peak RSS {fmt(r.peak_rss_mib)} MiB, "
                        f"{'ok' if r.ok else 'FAIL'} {r.note.splitlines()[0] if r.note else ''}"
                    )
                    results.append(r)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; servers stopped, partial results follow")
    except BenchError as e:
        log(f"error: {e}")
        return 2
    finally:
        remove_workdirs()
        if opts.postgres is not None:
            opts.postgres.stop()
    report(results, opts, skipped)
    if opts.json:
        write_json(opts.json, results, opts, skipped)
    if interrupted:
        return 130
    if not results or not all(r.ok for r in results):
        return 1
    return 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())

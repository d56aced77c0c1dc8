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
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import (
    MIB,
    BenchError,
    MachineCpu,
    TreeSampler,
    ensure_deb,
    free_port,
    fs_type,
    print_table,
    signals_raise,
    tree_cpu_seconds,
    wait_port,
)
from smtp_poczta import PocztaChecksTarget, PocztaTarget
from smtp_targets import (
    BUSY_PCT,
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
    "aiosmtpd": AiosmtpdTarget,
    "postfix": PostfixTarget,
    "poczta-checks": PocztaChecksTarget,
}


# --------------------------------------------------------------------------- one run


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


def smtp_source_cmd(opts: argparse.Namespace, port: int, concurrency: int) -> list[str]:
    cmd = [
        opts.smtp_source,
        "-s",
        str(concurrency),
        "-m",
        str(opts.messages),
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
    return [*cmd, f"{HOST}:{port}"]


def run_generator(cmd: list[str], timeout: float, errlog: Path) -> tuple[float, float, int]:
    """Run the load generator; return (wall seconds, its CPU seconds, exit status)."""
    with open(errlog, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    timer = threading.Timer(timeout, lambda: proc.kill())
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        if proc.returncode is None:  # interrupted: do not leave it running
            proc.kill()
            proc.wait()
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def run_one(opts: argparse.Namespace, cls: type[Target], concurrency: int) -> Result:
    res = Result(cls.name, concurrency, opts.messages)
    workdir = Path(tempfile.mkdtemp(prefix=f"{cls.name}-c{concurrency}-", dir=opts.workdir))
    target = cls(opts, workdir, free_port(HOST))
    try:
        try:
            try:
                target.start()
                wait_port(HOST, target.port, timeout=opts.start_timeout, alive=target.alive)
            except BenchError:
                res.start_failed = True
                raise
            cpu = MachineCpu()
            cpu.start()  # other work on the machine distorts the figures: look for it
            time.sleep(1.0)
            res.busy_before_pct = round(cpu.stop(), 1)
            cmd = smtp_source_cmd(opts, target.port, concurrency)
            with TreeSampler(target.roots, interval=opts.sample_interval) as sampler:
                srv0 = tree_cpu_seconds(target.roots())
                cpu.start()
                wall, gen_cpu, rc = run_generator(cmd, opts.timeout, workdir / "smtp-source.err")
                res.host_cpu_pct = round(cpu.stop(), 1)
                srv1 = tree_cpu_seconds(target.roots())
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


# --------------------------------------------------------------------------- report


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


RATIO_KEYS = ["concurrency"] + [
    f"{m}_vs_{peer}" for peer in ("aiosmtpd", "postfix") for m in ("msgs", "rss", "pss")
]
RATIO_HEADERS = ["conc"] + [
    f"{m} vs {peer}" for peer in ("aiosmtpd", "postfix") for m in ("msg/s", "RSS", "PSS")
]


def ratio_rows(results: list[Result], concurrencies: list[int]) -> list[list[str]]:
    by = {(r.target, r.concurrency): r for r in results if r.ok}
    rows = []
    for c in concurrencies:
        p = by.get(("poczta", c))
        row = [str(c)]
        for peer in ("aiosmtpd", "postfix"):
            q = by.get((peer, c))
            row += [
                ratio(p and p.msgs_per_s, q and q.msgs_per_s),
                ratio(p and p.peak_rss_mib, q and q.peak_rss_mib),
                ratio(p and p.peak_pss_mib, q and q.peak_pss_mib),
            ]
        rows.append(row)
    return rows


def checks_ratio_rows(results: list[Result], concurrencies: list[int]) -> list[list[str]]:
    by = {(r.target, r.concurrency): r for r in results if r.ok}
    rows = []
    for c in concurrencies:
        on, off = by.get(("poczta-checks", c)), by.get(("poczta", c))
        rows.append([str(c), ratio(on and on.msgs_per_s, off and off.msgs_per_s)])
    return rows


def report(results: list[Result], opts: argparse.Namespace, skipped: dict[str, str]) -> None:
    print()
    print(
        f"SMTP acceptance: {opts.messages:,} messages of {opts.size:,}+ bytes per run, "
        f"{'several messages per connection' if opts.keepalive else 'one connection per message'}"
        f", {os.cpu_count()} CPUs, work dir on {fs_type(Path(opts.workdir))}"
    )
    workers = opts.poczta_workers
    processes = "one process per CPU core" if workers == 0 else f"{workers} process(es)"
    print(f"poczta and poczta-checks run with workers = {workers}: {processes}")
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
    print_table(RATIO_HEADERS, ratio_rows(results, opts.concurrency), right=range(7))
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
    if opts.checks:
        doc["checks_on_vs_off"] = [
            {"concurrency": int(c), "msgs": r}
            for c, r in checks_ratio_rows(results, opts.concurrency)
        ]
    path.write_text(json.dumps(doc, indent=2) + "\n")


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
    if opts.workdir is None:
        tmp = Path(tempfile.gettempdir())
        opts.workdir = str(tmp if fs_type(tmp) != "tmpfs" else Path("/var/tmp"))
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
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
            names = list(opts.targets)
            if opts.checks and "poczta" in names:
                names.insert(names.index("poczta") + 1, "poczta-checks")
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

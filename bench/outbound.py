"""Outbound delivery throughput: poczta's queue runner against a relaying Postfix.

N messages of about 4 KB (default 5,000), one recipient each, spread over D domains
(default 20) whose MX hosts are Postfix ``smtp-sink`` processes on loopback
(`outbound_sinks`). Each sender gets the same messages queued and held, starts fresh,
and is released at one moment (`outbound_targets`); the clock runs from the first
message the sinks accepted to the last. The same concurrency budget for both: at most
``--connections`` connections overall and ``--concurrency`` per destination. Peak
RSS/PSS is sampled over the sender's process tree from the release until its queue is
empty. In the same run: the CPU cost of poczta's DKIM signing per message
(`outbound_dkim`).

Run it with ``python bench/outbound --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _common import (
    MIB,
    BenchError,
    MachineCpu,
    TreeSampler,
    ensure_deb,
    fs_type,
    print_table,
    signals_raise,
    tree_cpu_seconds,
)
from outbound_dkim import KEY_LOADS, DkimCost, dkim_costs
from outbound_sinks import Destination, SinkFarm, destinations, start_dnsmasq
from outbound_targets import PocztaSender, PostfixSender, Sender, make_message, recipient

BUSY_PCT = 15.0  # host CPU% with both sides idle above which the figures are suspect
POSTFIX_DEBCONF = ("postfix postfix/main_mailer_type select No configuration",)
TARGETS = ("poczta", "postfix")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Run:
    """One sender's figures for one run; seconds and % of one core."""

    target: str
    ok: bool = False
    seconds: float = 0.0  # first 250 at the sinks to the last
    msgs_per_s: float = 0.0
    from_release: float = 0.0  # release to the last 250
    queue_empty: float = 0.0  # release until the queue held nothing
    received: int = 0
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    peak_procs: int = 0
    sender_cpu_pct: float = 0.0
    sender_cpu_ms: float = 0.0  # CPU per message, release to the last 250
    sink_cpu_pct: float = 0.0
    host_cpu_pct: float = 0.0
    busy_before_pct: float = 0.0
    note: str = ""
    settings: dict[str, str] = field(default_factory=dict)


def build_sender(
    name: str, opts: argparse.Namespace, workdir: Path, targets: list[Destination],
    dns_port: int, sink_port: int,
) -> Sender:  # fmt: skip
    if name == "poczta":
        return PocztaSender(opts, workdir, dns_port, sink_port)
    return PostfixSender(opts, workdir, targets, sink_port)


def run_one(opts: argparse.Namespace, name: str, dns_port: int) -> Run:
    """A fresh sender and fresh sinks: fill, hold, release, time, check."""
    result = Run(name)
    workdir = Path(tempfile.mkdtemp(prefix=f"outbound-{name}-", dir=opts.workdir))
    targets = destinations(opts.domains)
    messages = [
        (to, make_message(n, to, opts.size))
        for n in range(opts.messages)
        for to in [recipient(n, targets)]
    ]
    sinks = SinkFarm(targets, workdir)
    sender: Sender | None = None
    try:
        sinks.start()
        sender = build_sender(name, opts, workdir, targets, dns_port, sinks.port)
        log(f"{name}: queueing {opts.messages} messages, held ...")
        sender.prepare(messages)
        result.settings = sender.settings()
        _measure(opts, sender, sinks, result)
    except BenchError as exc:
        result.note = str(exc)
        if sender is not None and sender.log_tail():
            result.note += "\n  log: " + "\n       ".join(sender.log_tail().splitlines())
    finally:
        if sender is not None:
            sender.stop()
        sinks.stop()
        if opts.keep:
            log(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _measure(opts: argparse.Namespace, sender: Sender, sinks: SinkFarm, result: Run) -> None:
    cpu = MachineCpu()
    cpu.start()  # other work on the machine distorts the figures: look for it
    time.sleep(1.0)
    result.busy_before_pct = round(cpu.stop(), 1)
    with TreeSampler(sender.roots, interval=opts.sample_interval) as sampler:
        profiler = start_profiler(opts, sender)
        sender0, sink0 = tree_cpu_seconds(sender.roots()), sinks.cpu_seconds()
        cpu.start()
        released = time.monotonic()
        sender.release()
        arrived = sinks.wait_for(opts.messages, opts.timeout)
        result.host_cpu_pct = round(cpu.stop(), 1)
        sender1, sink1 = tree_cpu_seconds(sender.roots()), sinks.cpu_seconds()
        stop_profiler(profiler)
        deadline = time.monotonic() + 60
        while arrived and sender.queued() and time.monotonic() < deadline:
            time.sleep(0.05)
        result.queue_empty = round(time.monotonic() - released, 3)
    result.received = sinks.received()
    first, last = sinks.first_at, sinks.last_at
    if first is not None and last is not None and last > first:
        window = last - first
        result.seconds = round(window, 3)
        result.msgs_per_s = round(result.received / window, 1)
        result.from_release = round(last - released, 3)
        result.sender_cpu_pct = round(100 * (sender1 - sender0) / window, 1)
        result.sender_cpu_ms = round(1000 * (sender1 - sender0) / max(result.received, 1), 3)
        result.sink_cpu_pct = round(100 * (sink1 - sink0) / window, 1)
    result.peak_rss_mib = round(sampler.result.peak_rss / MIB, 1)
    result.peak_pss_mib = round(sampler.result.peak_pss / MIB, 1)
    result.peak_procs = sampler.result.peak_procs
    left = sender.queued()
    notes = []
    if result.received != opts.messages:
        notes.append(f"the sinks received {result.received} of {opts.messages}")
    if left:
        notes.append(f"{left} still queued")
    result.note = "; ".join(notes)
    result.ok = not notes


def start_profiler(opts: argparse.Namespace, sender: Sender) -> subprocess.Popen[bytes] | None:
    """With --profile: py-spy sampling poczta's server (without pausing it) into that file."""
    if opts.profile is None or sender.name != "poczta":
        return None
    exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if exe is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    command = [exe, "record", "--nonblocking", "--subprocesses", "--format", "raw", "--rate", "250"]
    command += ["--pid", str(sender.roots()[0]), "--output", str(opts.profile)]
    profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return profiler


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(timeout=30)


def median_run(runs: list[Run]) -> Run:
    """The run with the median msg/s; `ok` only if every run was."""
    ranked = sorted(runs, key=lambda r: r.msgs_per_s)
    chosen = ranked[len(ranked) // 2]
    chosen.ok = all(r.ok for r in runs)
    if len(runs) > 1:
        rates = " ".join(f"{r.msgs_per_s:.0f}" for r in runs)
        chosen.note = "; ".join(filter(None, [chosen.note, f"runs {rates} msg/s"]))
    return chosen


# --------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def report(
    opts: argparse.Namespace, results: dict[str, Run], dkim: list[DkimCost], skipped: dict[str, str]
) -> None:
    print(
        f"\noutbound: {opts.messages} messages of {opts.size} bytes, one recipient each, to "
        f"{opts.domains} domains (one smtp-sink each); {platform.node()}, {os.cpu_count()} CPUs, "
        f"work dir on {fs_type(Path(opts.workdir))}; --repeat {opts.repeat}\n"
    )
    for r in results.values():
        print(f"{r.target} settings: " + ", ".join(f"{k} = {v}" for k, v in r.settings.items()))
    print()
    headers = ["target", "msg/s", "secs", "from release", "queue empty", "RSS MiB", "PSS MiB",
               "procs", "sender CPU%", "CPU ms/msg", "sink CPU%", "host CPU%", "busy%",
               "check"]  # fmt: skip
    rows = [
        [r.target, f"{r.msgs_per_s:,.0f}", f"{r.seconds:.2f}", f"{r.from_release:.2f}",
         f"{r.queue_empty:.2f}", f"{r.peak_rss_mib:.0f}", f"{r.peak_pss_mib:.0f}", r.peak_procs,
         f"{r.sender_cpu_pct:.0f}", f"{r.sender_cpu_ms:.2f}", f"{r.sink_cpu_pct:.0f}",
         f"{r.host_cpu_pct:.0f}", f"{r.busy_before_pct:.0f}", "ok" if r.ok else "FAIL"]
        for r in results.values()
    ]  # fmt: skip
    print_table(headers, rows, right=range(1, 13))
    for r in results.values():
        if r.note:
            print(f"  {r.target}: {r.note}")
    for name, why in skipped.items():
        print(f"  {name}: NOT MEASURED - {why}")
    p, q = results.get("poczta"), results.get("postfix")
    if p is not None and q is not None and p.ok and q.ok:
        print(
            f"\npoczta/postfix: msg/s {ratio(p.msgs_per_s, q.msgs_per_s)} (target 1.5), "
            f"peak RSS {ratio(p.peak_rss_mib, q.peak_rss_mib)}, "
            f"peak PSS {ratio(p.peak_pss_mib, q.peak_pss_mib)}, "
            f"sender CPU per message {ratio(p.sender_cpu_ms, q.sender_cpu_ms)}"
        )
    if dkim:
        print(
            f"\nDKIM signing by poczta (Signer.signatures, in process, {opts.dkim_messages} "
            f"messages of {opts.size} bytes, key loading alone over "
            f"{min(KEY_LOADS, opts.dkim_messages)}; CPU time, "
            "median of 3 rounds):\n"
        )
        rows = [
            [d.label, f"{d.us_per_message:,.0f}", f"{1e6 / d.us_per_message:,.0f}",
             f"{d.key_load_us:,.0f}"]
            for d in dkim
        ]  # fmt: skip
        headers = ["key", "µs/message", "msg/s per core", "loading the key (once): µs"]
        print_table(headers, rows, right=(1, 2, 3))
        print("a domain with both keys pays the sum (two signatures)")
    busy = [r for r in results.values() if r.busy_before_pct > BUSY_PCT]
    if busy:
        worst = max(r.busy_before_pct for r in busy)
        print(
            f"\nwarning: the CPUs were up to {worst:.0f}% busy with other work before "
            f"{', '.join(r.target for r in busy)} ran; their figures understate them"
        )


def write_json(path: Path, opts: argparse.Namespace, runs: dict[str, list[Run]],
               dkim: list[DkimCost]) -> None:  # fmt: skip
    data = {
        "options": {k: str(v) for k, v in vars(opts).items()},
        "runs": {name: [asdict(r) for r in rs] for name, rs in runs.items()},
        "dkim": [asdict(d) for d in dkim],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/outbound", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    add = p.add_argument
    add("--messages", type=int, default=5000, help="messages queued (default 5000)")
    add("--domains", type=int, default=20, help="destination domains, one sink each (default 20)")
    add("--size", type=int, default=4096, help="octets per message (default 4096)")
    add("--repeat", type=int, default=1, help="fresh runs per target; the median is shown")
    add("--targets", default=",".join(TARGETS), help="comma-separated: poczta,postfix")
    add("--connections", type=int, default=100, help="connections at once overall (default 100)")
    add("--concurrency", type=int, default=20, help="connections per domain (default 20)")
    add("--inject-sessions", type=int, default=10, help="SMTP sessions filling Postfix")
    add("--dkim-messages", type=int, default=200, help="messages signed per DKIM round (0: skip)")
    add("--timeout", type=float, default=300.0, help="seconds a delivery run may take")
    add("--sample-interval", type=float, default=0.1, help="seconds between memory samples")
    add("--workdir", type=Path, help="where the temporary directories go")
    add("--keep", action="store_true", help="keep the directories (logs) for inspection")
    add("--json", type=Path, help="also write every figure to this file")
    add("--profile", type=Path, help="py-spy poczta's server into this file (collapsed stacks)")
    add("--poczta-bin", help="the poczta executable (default: next to this python)")
    add("--poczta-workers", type=int, default=0,
        help="poczta's `workers` (0: one process per CPU core, the default here)")  # fmt: skip
    opts = p.parse_args(argv)
    opts.targets = [t for t in opts.targets.split(",") if t]
    unknown = set(opts.targets) - set(TARGETS)
    if unknown or opts.messages < 1 or opts.repeat < 1:
        p.error(f"bad --targets {', '.join(unknown)}" if unknown else "counts must be positive")
    if opts.workdir is None:
        root = Path(tempfile.gettempdir())
        opts.workdir = Path("/var/tmp") if fs_type(root) == "tmpfs" else root
    if opts.poczta_bin is None:
        local = Path(sys.executable).parent / "poczta"
        opts.poczta_bin = str(local) if local.exists() else shutil.which("poczta") or "poczta"
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    runs: dict[str, list[Run]] = {name: [] for name in opts.targets}
    skipped: dict[str, str] = {}
    dkim: list[DkimCost] = []
    interrupted = False
    dns: subprocess.Popen[bytes] | None = None
    try:
        with signals_raise():
            ensure_deb("postfix", POSTFIX_DEBCONF, log=log)  # smtp-sink, and the peer
            ensure_deb("dnsmasq-base", log=log)
            with tempfile.TemporaryDirectory(prefix="outbound-dns-", dir=opts.workdir) as d:
                dns, dns_port = start_dnsmasq(destinations(opts.domains), Path(d))
                for i in range(opts.repeat):
                    for name in opts.targets:
                        r = run_one(opts, name, dns_port)
                        first_note = r.note.splitlines()[0] if r.note else ""
                        state = "ok" if r.ok else "FAIL"
                        log(
                            f"  {name} run {i + 1}: {r.msgs_per_s:,.0f} msg/s, {state} {first_note}"
                        )
                        runs[name].append(r)
            if opts.dkim_messages > 0:
                log("DKIM signing cost ...")
                dkim = dkim_costs(opts.dkim_messages, opts.size)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; servers stopped, partial results follow")
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        if dns is not None:
            dns.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                dns.wait(timeout=5)
    results = {name: median_run(rs) for name, rs in runs.items() if rs}
    report(opts, results, dkim, skipped)
    if opts.json:
        write_json(opts.json, opts, runs, dkim)
    if interrupted:
        return 130
    return 0 if results and all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

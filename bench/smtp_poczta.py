"""SMTP acceptance benchmark: poczta under test, on SQLite or PostgreSQL, with its checks
on or off, on one node or two sharing one database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BenchError, free_port, wait_port
from smtp_targets import DOMAIN, HELO, HOST, RCPT, SENDER, PopenTarget, Target, run


def poczta_bin(opts: argparse.Namespace) -> str | None:
    if opts.poczta_bin:
        return str(opts.poczta_bin)
    local = Path(sys.executable).parent / "poczta"
    return str(local) if local.exists() else shutil.which("poczta")


def poczta_commands(exe: str, *group: str) -> set[str]:
    """Sub-command names that ``poczta [group] --help`` lists (click's "Commands:" block)."""
    r = run([exe, *group, "--help"], check=False, timeout=60)
    if r.returncode != 0:
        raise BenchError(
            f"`poczta {' '.join([*group, '--help'])}` failed "
            f"({r.returncode}): {(r.stdout + r.stderr).strip()[-600:]}"
        )
    names, inside = set(), False
    for line in r.stdout.splitlines():
        if line.strip().lower().startswith("commands"):
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            names.add(line.split()[0].rstrip(","))
        elif inside and line.strip() and not line.startswith(" "):
            inside = False
    return names


CHECKS_OFF = "\n[checks]\nenabled = false\n"


def poczta_config(
    data_dir: Path,
    port: int,
    checks: str = CHECKS_OFF,
    workers: int = 1,
    *,
    host: str = HOST,
    store: str = "",
) -> str:
    """The benchmark's config: one SMTP listener on `host`:`port`; `store` is a `[store]`
    table ("": the default, SQLite in the data directory)."""
    return f"""\
hostname = "{HELO}"
data_dir = "{data_dir}"
domains = ["{DOMAIN}"]
workers = {workers}

[listeners]
smtp = ["{host}:{port}"]
submission = []
submissions = []
pop3 = []
pop3s = []
imap = []
imaps = []

[limits]
max_connections_per_ip = 200
{checks}{store}"""


def poczta_setup(
    exe: str,
    config: Path,
    data_dir: Path,
    port: int,
    checks: str = CHECKS_OFF,
    workers: int = 1,
    *,
    host: str = HOST,
    store: str = "",
    accounts: bool = True,
) -> None:
    """Write ``config`` and prepare a fresh data directory; with `accounts`, add the
    benchmark recipient to the store (a second node sharing a database finds it there).

    This is the one place to adapt when poczta's command line changes.
    """
    commands = poczta_commands(exe)
    if "init" in commands:
        # `init` creates the data directory and the self-signed certificate the
        # server loads at start-up; its own config goes to a scratch file, the
        # benchmark writes the config it needs next to it.
        scratch = config.with_name("poczta-init.toml")
        run(
            [
                exe,
                "init",
                "-c",
                str(scratch),
                "--hostname",
                HELO,
                "--data-dir",
                str(data_dir),
                "--domain",
                DOMAIN,
            ]
        )
    config.write_text(poczta_config(data_dir, port, checks, workers, host=host, store=store))
    cfg = ["-c", str(config)]
    if not accounts:
        return
    if "domain" in commands:
        # the domain is also listed in the config; "already exists" is fine
        run([exe, "domain", "add", *cfg, DOMAIN], check=False)
    run([exe, "user", "add", *cfg, RCPT, "--password-stdin"], input="bench-secret-4096\n")


class PocztaTarget(PopenTarget):
    """`poczta serve` on SQLite, its store in its data directory."""

    name = "poczta"
    host = HOST
    accounts = True  # whether this server adds the recipient (the first node of several)
    workers: int | None = None  # its `workers` setting, when not --poczta-workers

    def store_table(self) -> str:
        return ""

    def endpoints(self) -> list[tuple[str, int]]:
        return [(self.host, self.port)]

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        exe = poczta_bin(opts)
        if exe is None:
            return "no poczta executable found"
        try:
            commands = poczta_commands(exe)
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            return f"poczta is not runnable yet: {e}"
        missing = {"serve", "user", "mail"} - commands
        if missing:
            return f"poczta lacks the command(s) {', '.join(sorted(missing))}"
        return None

    def start(self) -> None:
        exe = poczta_bin(self.opts)
        assert exe is not None
        self.exe = exe
        self.config = self.workdir / "poczta.toml"
        poczta_setup(
            exe,
            self.config,
            self.workdir / "poczta-data",
            self.port,
            workers=self.opts.poczta_workers if self.workers is None else self.workers,
            host=self.host,
            store=self.store_table(),
            accounts=self.accounts,
        )
        self.spawn([exe, "serve", "-c", str(self.config)])

    def stored(self) -> int:
        r = run([self.exe, "mail", "list", "-c", str(self.config), RCPT, "--json"])
        try:
            items = json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise BenchError(f"poczta mail list --json printed no JSON: {r.stdout[:300]!r}") from e
        if not isinstance(items, list):
            raise BenchError("poczta mail list --json did not print a JSON list")
        return len(items)


# The zones the checks-on case asks: the benchmark sender passes SPF and DMARC (p=reject),
# the client address and the sender domain are looked up in blocklists that do not list
# them. smtp-source cannot sign, so DKIM finds no signature.
BENCH_ZONES = {
    "bench.test": f"v=spf1 ip4:{HOST} -all",
    "_dmarc.bench.test": "v=DMARC1; p=reject",
}


def checks_config(dns_port: int) -> str:
    return f"""
[dns]
nameservers = ["{HOST}"]
port = {dns_port}
timeout = 1.0

[checks]
dnsbl_ip_zones = ["bl.bench.test"]
dnsbl_domain_zones = ["dbl.bench.test"]
greylist_delay = 0
"""


class PocztaChecksTarget(PocztaTarget):
    """poczta with every check of incoming mail on, its DNS answered by a local dnsmasq.

    Greylisting is on: before the measured run one RCPT is greylisted and retried, so the
    benchmark triplet is whitelisted, as a regular correspondent's would be.
    """

    name = "poczta-checks"
    dns: subprocess.Popen[bytes] | None = None

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        if dnsmasq_bin() is None:
            return "dnsmasq not found (Debian package dnsmasq-base)"
        return super().unavailable(opts)

    def start(self) -> None:
        exe = poczta_bin(self.opts)
        assert exe is not None
        self.exe = exe
        self.config = self.workdir / "poczta.toml"
        dns_port = free_port(HOST)
        negative_soa = not self.opts.uncached_negatives
        self.dns = start_dnsmasq(dns_port, self.workdir, negative_soa=negative_soa)
        checks = checks_config(dns_port)
        workers = self.opts.poczta_workers
        poczta_setup(exe, self.config, self.workdir / "poczta-data", self.port, checks, workers)
        self.spawn([exe, "serve", "-c", str(self.config)])
        wait_port(HOST, self.port, timeout=self.opts.start_timeout, alive=self.alive)
        pass_greylisting(self.port)

    def stop(self) -> None:
        super().stop()
        if self.dns is not None:
            self.dns.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dns.wait(timeout=5)


def dnsmasq_bin() -> str | None:
    return shutil.which("dnsmasq", path=f"/usr/sbin:{os.environ.get('PATH', '')}")


def start_dnsmasq(
    port: int, workdir: Path, *, negative_soa: bool = True
) -> subprocess.Popen[bytes]:
    """dnsmasq serving BENCH_ZONES. With `negative_soa` it is authoritative for .test and
    puts an SOA in every negative answer, as real servers do, so that a resolver (and
    poczta's cache) keeps NXDOMAIN for the SOA's TTL; without it, negative answers carry
    no SOA and cannot be cached: every message asks again."""
    exe = dnsmasq_bin()
    assert exe is not None
    # On the command line dnsmasq keeps quotes as data and splits strings at commas.
    records = [f"--txt-record={name},{text}" for name, text in BENCH_ZONES.items()]
    authority = [f"--auth-server=ns.bench.test,{HOST}", "--auth-zone=test", "--auth-ttl=300"]
    proc = subprocess.Popen(
        [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", f"--listen-address={HOST}", f"--port={port}", "--local=/test/",
         "--local-ttl=300", *(authority if negative_soa else []),
         f"--pid-file={workdir / 'dnsmasq.pid'}", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(0.3)
    if proc.poll() is not None:
        raise BenchError(f"dnsmasq exited with {proc.returncode}")
    return proc


def pass_greylisting(port: int) -> None:
    """Greylist the benchmark triplet and retry at once (delay 0): it is whitelisted."""
    import smtplib

    codes = []
    for _ in range(2):
        with smtplib.SMTP(HOST, port, timeout=30) as client:
            client.ehlo(HELO)
            client.mail(SENDER)
            codes.append(client.rcpt(RCPT)[0])
            client.rset()
    if codes != [451, 250]:
        raise BenchError(f"greylisting warm-up answered {codes}, expected [451, 250]")


class PocztaPgTarget(PocztaTarget):
    """`poczta serve` on the benchmark's PostgreSQL, a new database for every run."""

    name = "poczta-pg"
    db_backed = True
    store: str | None = None  # the `[store]` table; nodes of one run are given the same

    def store_table(self) -> str:
        if self.store is None:
            self.store = str(self.opts.postgres.store_config())
        return self.store


def node_workers(workers: int, nodes: int) -> int:
    """Each node's `workers` when `nodes` share one machine: with 0 (one process per
    core), the machine's cores shared out, so that the nodes together run as many
    processes as one node would (two nodes stand for two machines' worth of nodes, not
    for twice the CPUs)."""
    if workers:
        return workers
    return max(1, (os.cpu_count() or 1) // nodes)


class PocztaNodesTarget(Target):
    """Two `poczta serve` nodes on one machine sharing one PostgreSQL database: each in a
    directory of its own, listening on its own loopback address (the same port)."""

    name = "poczta-pg-2nodes"
    db_backed = True
    hosts = ("127.0.0.2", "127.0.0.3")

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        return PocztaTarget.unavailable(opts)

    def start(self) -> None:
        store = self.opts.postgres.store_config()
        self.nodes: list[PocztaPgTarget] = []
        workers = node_workers(self.opts.poczta_workers, len(self.hosts))
        for n, host in enumerate(self.hosts, 1):
            folder = self.workdir / f"node{n}"
            folder.mkdir()
            node = PocztaPgTarget(self.opts, folder, self.port)
            node.host, node.accounts, node.store = host, n == 1, store
            node.workers = workers
            self.nodes.append(node)
            node.start()
            wait_port(host, self.port, timeout=self.opts.start_timeout, alive=node.alive)

    def endpoints(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    def alive(self) -> bool:
        return all(node.alive() for node in self.nodes)

    def roots(self) -> list[int]:
        return [pid for node in getattr(self, "nodes", []) for pid in node.roots()]

    def stop(self) -> None:
        for node in getattr(self, "nodes", []):
            node.stop()

    def stored(self) -> int:
        return self.nodes[0].stored()

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(node.log_tail(n // 2) for node in getattr(self, "nodes", []))

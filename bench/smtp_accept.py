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
import contextlib
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
    descendants,
    ensure_deb,
    free_port,
    fs_type,
    print_table,
    signals_raise,
    terminate_tree,
    tree_cpu_seconds,
    wait_port,
)

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
HELO = "bench.test"
SENDER = "sender@bench.test"
DOMAIN = "example.test"
RCPT = f"rcpt@{DOMAIN}"
TARGETS = ("poczta", "aiosmtpd", "postfix")
BUSY_PCT = 15.0  # host CPU% before a run above which the machine counts as busy
POSTFIX_DEBCONF = ("postfix postfix/main_mailer_type select No configuration",)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    cmd: list[str], *, input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode != 0:
        out = (r.stdout + r.stderr).strip().splitlines()[-4:]  # a traceback's last lines
        raise BenchError(f"`{' '.join(cmd)}` exited with {r.returncode}: " + " | ".join(out))
    return r


# --------------------------------------------------------------------------- targets


class Target:
    """One server under test, living in ``workdir`` and listening on ``port``."""

    name = "?"

    def __init__(self, opts: argparse.Namespace, workdir: Path, port: int) -> None:
        self.opts = opts
        self.workdir = workdir
        self.port = port

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        """Why this target cannot run here, or None."""
        return None

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return True

    def roots(self) -> list[int]:
        """Top process(es) of the server; their descendants are measured too."""
        raise NotImplementedError

    def wait_stored(self, expected: int, timeout: float) -> str:
        """Wait for asynchronous delivery after acceptance; return a note (or '')."""
        return ""

    def stop(self) -> None:
        raise NotImplementedError

    def stored(self) -> int:
        """Number of messages the (stopped) server has stored for the recipient."""
        raise NotImplementedError


class PopenTarget(Target):
    """A server that runs in the foreground as our child process."""

    proc: subprocess.Popen[bytes] | None = None

    def spawn(self, cmd: list[str]) -> None:
        logf = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )  # Ctrl-C reaches us only
        finally:
            logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate_tree([self.proc.pid])
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.workdir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def count_files(d: Path) -> int:
    try:
        return sum(1 for e in os.scandir(d) if e.is_file())
    except FileNotFoundError:
        return 0


class AiosmtpdTarget(PopenTarget):
    name = "aiosmtpd"

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        r = run([sys.executable, "-c", "import aiosmtpd"], check=False)
        return None if r.returncode == 0 else f"aiosmtpd is not importable by {sys.executable}"

    def start(self) -> None:
        self.maildir = self.workdir / "Maildir"
        self.spawn(
            [
                sys.executable,
                str(BENCH_DIR / "aiosmtpd_target.py"),
                "--listen",
                f"{HOST}:{self.port}",
                "--maildir",
                str(self.maildir),
            ]
        )

    def stored(self) -> int:
        return count_files(self.maildir / "new")


class PostfixTarget(Target):
    """A private Postfix instance: own config, queue and data directories, loopback only."""

    name = "postfix"
    vmail_uid = 65534  # nobody: virtual(8) refuses uids below virtual_minimum_uid
    vmail_gid = 65534
    queue_subdirs = ("maildrop", "incoming", "active", "deferred", "hold")

    @classmethod
    def unavailable(cls, opts: argparse.Namespace) -> str | None:
        return (
            None
            if shutil.which("postfix", path=f"/usr/sbin:{os.environ.get('PATH', '')}")
            else "postfix is not installed"
        )

    def _paths(self) -> None:
        w = self.workdir
        self.etc, self.queue, self.data = w / "etc", w / "queue", w / "data"
        self.base = w / "vmail"
        self.maildir = self.base / DOMAIN / "rcpt" / "Maildir"
        self.logfile = w / "postfix.log"

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["postfix", "-c", str(self.etc), *args], check=check)

    def private_instance_cf(self, writer: str, hostname: str, origin: str) -> str:
        """The head of main.cf every benchmark's private Postfix shares: its own
        directories and log, loopback only, no local delivery, no DNS anywhere."""
        return f"""\
# Private benchmark instance, written by poczta's {writer}.
compatibility_level = 3.6
config_directory = {self.etc}
queue_directory = {self.queue}
data_directory = {self.data}
syslog_name = postfix-bench
maillog_file = {self.logfile}
maillog_file_prefixes = {self.workdir}
myhostname = {hostname}
mydomain = {hostname}
myorigin = {origin}
mydestination =
relayhost =
inet_interfaces = {HOST}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_peername_lookup = no
smtp_host_lookup = native
lmtp_host_lookup = native
smtp_dns_support_level = disabled
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
"""

    def main_cf(self) -> str:
        limit = max(200, 4 * max(self.opts.concurrency))
        return (
            self.private_instance_cf("bench/smtp_accept", HELO, HELO)
            + f"""\
# enough processes and connections for the highest concurrency
default_process_limit = {limit}
# the recipient domain goes to one Maildir
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.base}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{self.vmail_uid}
virtual_gid_maps = static:{self.vmail_gid}
"""
        )

    def master_cf(self) -> str:
        limit = max(200, 4 * max(self.opts.concurrency))
        services = [
            # service  type  private unpriv chroot wakeup maxproc command
            f"{HOST}:{self.port} inet n - n - {limit} smtpd",
            "pickup    unix  n - n 60 1 pickup",
            "cleanup   unix  n - n - 0 cleanup",
            "qmgr      unix  n - n 300 1 qmgr",
            "rewrite   unix  - - n - - trivial-rewrite",
            "bounce    unix  - - n - 0 bounce",
            "defer     unix  - - n - 0 bounce",
            "trace     unix  - - n - 0 bounce",
            "verify    unix  - - n - 1 verify",
            "flush     unix  n - n 1000? 0 flush",
            "proxymap  unix  - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp      unix  - - n - - smtp",
            "relay     unix  - - n - - smtp",
            "showq     unix  n - n - - showq",
            "error     unix  - - n - - error",
            "retry     unix  - - n - - error",
            "discard   unix  - - n - - discard",
            "local     unix  - n n - - local",
            "virtual   unix  - n n - - virtual",
            "lmtp      unix  - - n - - lmtp",
            "anvil     unix  - - n - 1 anvil",
            "scache    unix  - - n - 1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ]
        return "# Private benchmark instance (no chroot).\n" + "\n".join(services) + "\n"

    def start(self) -> None:
        self._paths()
        self.master_pid: int | None = None
        self.workdir.chmod(0o755)  # the postfix user and the mailbox owner must traverse it
        for d in (self.etc, self.queue, self.base):
            d.mkdir(mode=0o755)
        os.chown(self.base, self.vmail_uid, self.vmail_gid)
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(self.master_cf())
        (self.etc / "vmailbox").write_text(f"{RCPT} {DOMAIN}/rcpt/Maildir/\n")
        r = self.postfix("start", check=False)
        self.master_pid = self._read_master_pid()
        if r.returncode != 0:
            raise BenchError(
                f"postfix start failed: {(r.stdout + r.stderr).strip()}\n{self.log_tail()}"
            )

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        return self.master_pid is not None and bool(descendants([self.master_pid]))

    def roots(self) -> list[int]:
        return [self.master_pid] if self.master_pid else []

    def queued(self) -> dict[str, int]:
        out = {}
        for sub in self.queue_subdirs:
            n = 0
            for _root, _dirs, files in os.walk(self.queue / sub):
                n += len(files)
            out[sub] = n
        return out

    def wait_stored(self, expected: int, timeout: float) -> str:
        t0 = time.monotonic()
        last, last_change = -1, t0
        while True:
            n = count_files(self.maildir / "new")
            now = time.monotonic()
            if n >= expected:
                lag = now - t0
                return f"delivered +{lag:.1f}s" if lag >= 0.5 else ""
            if n != last:
                last, last_change = n, now
            q = self.queued()
            if q["deferred"] or q["hold"]:
                return f"{q['deferred']} deferred, {q['hold']} held: {self.log_tail(3)}"
            if now - t0 > timeout or (now - last_change > 30 and not any(q.values())):
                return f"delivery stalled at {n}/{expected}"
            time.sleep(0.1)

    def stop(self) -> None:
        if not hasattr(self, "etc") or not self.etc.exists():
            return
        pid = self.master_pid or self._read_master_pid()
        tree = [p.pid for p in descendants([pid])] if pid else []
        if pid and tree:
            for action in ("stop", "abort"):
                self.postfix(action, check=False)
                deadline = time.monotonic() + 10
                while descendants([pid]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not descendants([pid]):
                    break
        terminate_tree(tree, timeout=2)  # whatever survived, and orphans of the master

    def stored(self) -> int:
        return count_files(self.maildir / "new")

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


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


def poczta_config(data_dir: Path, port: int, checks: str = CHECKS_OFF, workers: int = 1) -> str:
    return f"""\
hostname = "{HELO}"
data_dir = "{data_dir}"
domains = ["{DOMAIN}"]
workers = {workers}

[listeners]
smtp = ["{HOST}:{port}"]
submission = []
submissions = []
pop3 = []
pop3s = []
imap = []
imaps = []

[limits]
max_connections_per_ip = 200
{checks}"""


def poczta_setup(
    exe: str, config: Path, data_dir: Path, port: int, checks: str = CHECKS_OFF, workers: int = 1
) -> None:
    """Write ``config`` and prepare a fresh data directory holding the benchmark recipient.

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
    config.write_text(poczta_config(data_dir, port, checks, workers))
    cfg = ["-c", str(config)]
    if "domain" in commands:
        # the domain is also listed in the config; "already exists" is fine
        run([exe, "domain", "add", *cfg, DOMAIN], check=False)
    run([exe, "user", "add", *cfg, RCPT, "--password-stdin"], input="bench-secret-4096\n")


class PocztaTarget(PopenTarget):
    name = "poczta"

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
        workers = self.opts.poczta_workers
        poczta_setup(exe, self.config, self.workdir / "poczta-data", self.port, workers=workers)
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

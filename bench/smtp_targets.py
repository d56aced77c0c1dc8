"""SMTP acceptance benchmark: the servers it measures poczta against (aiosmtpd, Postfix).

`Target` is one server under test in its own directory on a loopback port;
`PopenTarget` one that runs as our child. poczta's own targets are in smtp_poczta.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import BenchError, descendants, terminate_tree

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
    db_backed = False  # whether its store is the benchmark's PostgreSQL

    def __init__(self, opts: argparse.Namespace, workdir: Path, port: int) -> None:
        self.opts = opts
        self.workdir = workdir
        self.port = port

    def endpoints(self) -> list[tuple[str, int]]:
        """Where it takes mail: (address, port) of each node."""
        return [(HOST, self.port)]

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

"""Helpers shared by the poczta benchmarks.

Everything here is standard library only, so a benchmark can run before the
project itself is importable:

* ``TreeSampler``    - peak RSS / PSS of a whole process tree, sampled from /proc
* ``MachineCpu``     - machine-wide CPU utilisation over an interval
* ``free_port`` / ``wait_port`` - loopback port helpers
* ``ensure_deb``     - install a Debian package once (apt-get), with debconf answers
* ``terminate_tree`` / ``descendants`` - stop a process and all of its children
* ``ServerProcess``  - a server under test started in its own session, logging to a file
* ``run`` / ``make_certificate`` - a checked command; the self-signed certificate
* ``raise_fd_limit`` - the soft RLIMIT_NOFILE up to the hard one (inherited by servers)
* ``print_table``    - plain aligned text tables
* ``signals_raise``  - turn SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` runs
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark step failed; the message is meant for the user."""


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    rss_bytes: int
    cpu_ticks: int  # utime + stime, plus those of its children it has waited for


def _read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:  # the process went away between listdir and open
        return None
    head, _, tail = raw.rpartition(b")")
    comm = head.partition(b"(")[2].decode(errors="replace")
    fields = tail.split()
    # fields[0] is the state (field 3 of stat(5)); ppid is field 4.
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        comm=comm,
        rss_bytes=int(fields[21]) * PAGE_SIZE,
        cpu_ticks=sum(int(x) for x in fields[11:15]),
    )


def all_procs() -> dict[int, ProcStat]:
    procs: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st is not None:
                procs[st.pid] = st
    return procs


def descendants(roots: Iterable[int], procs: dict[int, ProcStat] | None = None) -> list[ProcStat]:
    """The processes in ``roots`` (those still alive) plus all of their descendants."""
    if procs is None:
        procs = all_procs()
    children: dict[int, list[int]] = {}
    for st in procs.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out: list[ProcStat] = []
    seen: set[int] = set()
    stack = [r for r in roots if r in procs]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(procs[pid])
        stack.extend(children.get(pid, ()))
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 when unavailable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class TreeSample:
    peak_rss: int = 0
    peak_pss: int = 0
    peak_procs: int = 0
    samples: int = 0
    comms: set[str] = field(default_factory=set)


class TreeSampler:
    """Samples the summed RSS (and PSS) of a process tree in a background thread.

    ``roots`` is called at each sample, so a server whose top process is only
    known after start-up (a daemonising master) can be followed.  RSS summed over
    a multi-process server counts shared pages (libraries, shared memory) once
    per process; PSS splits them between the processes sharing them and is the
    fairer figure for comparing a one-process server with a multi-process one.
    """

    def __init__(
        self, roots: Callable[[], Iterable[int]], interval: float = 0.1, pss: bool = True
    ) -> None:
        self._roots = roots
        self._interval = interval
        self._pss = pss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result = TreeSample()

    def sample_once(self) -> None:
        tree = descendants(self._roots())
        if not tree:
            return
        r = self.result
        r.samples += 1
        r.peak_procs = max(r.peak_procs, len(tree))
        r.peak_rss = max(r.peak_rss, sum(p.rss_bytes for p in tree))
        if self._pss:
            r.peak_pss = max(r.peak_pss, sum(pss_bytes(p.pid) for p in tree))
        r.comms.update(p.comm for p in tree)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sample_once()
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):
            self.sample_once()  # one last look, after the load ended


class MachineCpu:
    """Busy share of all CPUs between ``start()`` and ``stop()``, from /proc/stat."""

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
        return sum(parts[:8]), idle

    def start(self) -> None:
        self._t0, self._i0 = self._read()

    def stop(self) -> float:
        t1, i1 = self._read()
        total = t1 - self._t0
        return 100.0 * (total - (i1 - self._i0)) / total if total > 0 else 0.0


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU time used so far by a process tree.

    Children that already exited count when their parent (inside the tree) has
    reaped them, which is how multi-process servers such as Postfix work.
    """
    return sum(p.cpu_ticks for p in descendants(roots)) / CLK_TCK


# --------------------------------------------------------------------------- network


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout: float = 30.0, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until ``host:port`` accepts TCP connections.

    ``alive`` is polled meanwhile; if it says the server died, give up at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise BenchError(f"server exited before listening on {host}:{port}")
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- processes


def terminate_tree(roots: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM a process tree, then SIGKILL whatever is left after ``timeout``."""
    tree = [p.pid for p in descendants(roots)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            procs = all_procs()
            tree = [pid for pid in tree if pid in procs and not _is_zombie(pid)]
            if not tree:
                return
            time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except OSError:
        return True


def run(cmd: list[str], *, input: str | None = None, timeout: float = 300) -> str:
    """Run `cmd`; its stdout, or BenchError quoting the end of its output."""
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-4:])
        raise BenchError(f"`{' '.join(cmd)}` exited with {r.returncode}: {tail}")
    return r.stdout


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """One self-signed P-256 certificate in `directory`, the same for every target."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec"),
                *("-pkeyopt", "ec_paramgen_curve:P-256"),
                *("-nodes", "-subj", "/CN=bench.test", "-days", "2"),
                *("-keyout", str(key), "-out", str(cert)),
            ]
        )
    return cert, key


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards `wanted` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class ServerProcess:
    """A server under test: started in its own session, output to `log_path`."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, command: list[str]) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def roots(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 4) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the server and wait up to `grace` for it, then end its whole tree."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        terminate_tree([self.proc.pid])
        self.proc = None


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- packages


def deb_installed(package: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_deb(
    package: str,
    debconf: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> None:
    """Install a Debian package unless it is already installed.

    ``debconf`` lines (``"pkg question type value"``) are preseeded first, so the
    installation asks nothing and, for a server, need not configure or start it.
    """
    if deb_installed(package):
        return
    if shutil.which("apt-get") is None:
        raise BenchError(f"{package} is not installed and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log(f"installing the Debian package {package} ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if debconf:
        subprocess.run(
            [*sudo, "debconf-set-selections"],
            input="\n".join(debconf) + "\n",
            text=True,
            check=True,
            env=env,
        )
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    if not deb_installed(package):
        raise BenchError(f"installing {package} failed")


# --------------------------------------------------------------------------- output


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    right: Iterable[int] = (),
    out: Callable[[str], None] = print,
) -> None:
    """Print an aligned text table; columns whose index is in ``right`` are right-aligned."""
    right = set(right)
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out(fmt(cells[0]))
    out("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        out(fmt(r))


def fs_type(path: Path) -> str:
    """File-system type holding ``path`` (from /proc/self/mounts), e.g. 'ext4' or 'tmpfs'."""
    path = path.resolve()
    best, kind = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(
                mnt
            ) >= len(best):
                best, kind = mnt, parts[2]
    return kind

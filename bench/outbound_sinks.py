"""The receiving side of the outbound benchmark: one smtp-sink per destination, and their DNS.

Every destination domain ``dN.test`` has its own MX host ``mx.dN.test`` on its own
loopback address (127.0.1.N), where one Postfix ``smtp-sink`` listens, so both
senders see as many distinct hosts as there are domains (one sink process cannot
listen on several addresses short of the wildcard one). Each sink runs with ``-c``:
it writes ``sess=S quit=Q mesg=M`` followed by a carriage return whenever a session
ends or a message's final "." has been answered with 250; a reader thread notes when
each count arrives, which gives the time of the first and of the last 250 without the
sink writing anything to disk.

``dnsmasq`` publishes the MX and A records on a free loopback port (poczta asks it);
Postfix, whose resolver is the system's, gets the same hosts as a transport map.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _common import BenchError, free_port, terminate_tree, tree_cpu_seconds, wait_port

__all__ = ["Destination", "SinkFarm", "destinations", "start_dnsmasq"]

_COUNTER = re.compile(rb"mesg=(\d+)")


@dataclass(frozen=True)
class Destination:
    domain: str
    mx: str
    address: str


def destinations(count: int) -> list[Destination]:
    """`count` domains d0.test, d1.test, ... with their MX hosts on 127.0.1.1, 127.0.1.2, ..."""
    if not 1 <= count <= 250:
        raise BenchError("--domains must be between 1 and 250")
    return [Destination(f"d{n}.test", f"mx.d{n}.test", f"127.0.1.{n + 1}") for n in range(count)]


class SinkFarm:
    """One ``smtp-sink`` per destination, all on the same port; counts what they accepted."""

    def __init__(self, targets: Sequence[Destination], workdir: Path) -> None:
        self.targets = list(targets)
        self.workdir = workdir
        self.port = free_port("127.0.1.1")
        self._procs: list[subprocess.Popen[bytes]] = []
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.first_at: float | None = None  # monotonic time of the first 250 to a message
        self.last_at: float | None = None  # ... and of the latest one
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        exe = shutil.which("smtp-sink", path=f"/usr/sbin:{os.environ.get('PATH', '')}")
        if exe is None:
            raise BenchError("smtp-sink not found (Debian package postfix)")
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(self.workdir / "smtp-sink.log", "ab") as errors:
            for t in self.targets:
                proc = subprocess.Popen(
                    [exe, *user, "-c", "-h", t.mx, f"{t.address}:{self.port}", "1024"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    start_new_session=True,
                )
                self._procs.append(proc)
        for t, proc in zip(self.targets, self._procs, strict=True):
            wait_port(t.address, self.port, timeout=10, alive=partial(_running, proc))
        self._reader = threading.Thread(target=self._read, name="sink-counters", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        selector = selectors.DefaultSelector()
        for proc in self._procs:
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            selector.register(proc.stdout, selectors.EVENT_READ, proc.pid)
        open_pipes = len(self._procs)
        while open_pipes:
            for key, _ in selector.select(timeout=1.0):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                now = time.monotonic()
                if not data:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                found = _COUNTER.findall(data)
                if found:
                    self._update(key.data, int(found[-1]), now)
        selector.close()

    def _update(self, pid: int, count: int, now: float) -> None:
        with self._changed:
            if count > self._counts.get(pid, 0):
                if self.first_at is None:
                    self.first_at = now
                self.last_at = now
                self._counts[pid] = count
                self._changed.notify_all()

    def received(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def wait_for(self, count: int, timeout: float, stalled: float = 30.0) -> bool:
        """Wait until the sinks accepted `count` messages; False on `timeout`, or when
        nothing arrived for `stalled` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(self._counts.values()) < count:
                now = time.monotonic()
                last = self.last_at or now
                if now >= deadline or now - last > stalled:
                    return False
                self._changed.wait(min(1.0, deadline - now))
        return True

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds([p.pid for p in self._procs])

    def stop(self) -> None:
        terminate_tree([p.pid for p in self._procs], timeout=5)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        for proc in self._procs:
            if proc.stdout is not None:
                proc.stdout.close()


def _running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def start_dnsmasq(
    targets: Sequence[Destination], workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """dnsmasq on 127.0.0.1 answering for ``.test``: each destination's MX and A record,
    with a TTL of 300 s so that a caching resolver may keep them; (process, port)."""
    exe = shutil.which("dnsmasq", path=f"/usr/sbin:{os.environ.get('PATH', '')}")
    if exe is None:
        raise BenchError("dnsmasq not found (Debian package dnsmasq-base)")
    port = free_port("127.0.0.1")
    records = [f"--mx-host={t.domain},{t.mx},10" for t in targets]
    records += [f"--host-record={t.mx},{t.address}" for t in targets]
    proc = subprocess.Popen(
        [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}", "--local=/test/",
         "--local-ttl=300", f"--pid-file={workdir / 'dnsmasq.pid'}", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(0.3)
    if proc.poll() is not None:
        raise BenchError(f"dnsmasq exited with {proc.returncode}")
    return proc, port

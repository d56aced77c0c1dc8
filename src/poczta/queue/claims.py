"""Who holds a queue claim: the names of queue runners, and whether the runner behind one is gone.

Every worker process of a server runs a queue runner, and each takes its entries with
claims in the store (`MailStore.claim_queue`): the claim names the runner and lasts
until a lease time the live runner keeps moving ahead. A runner that died cannot renew
its lease, but waiting for the lease to run out would hold its entries for minutes, so
a runner also takes back the claims of the runners it can see are gone: those of its
own machine whose process no longer lives.

A name is ``NODE:HOST:PID.START:TOKEN``. NODE is the server's hostname, for people
reading `poczta queue show`. HOST tells this machine from others sharing the store,
and from other containers of the same machine: a digest of the kernel's boot id and of
the pid namespace, so that a pid is only ever looked up where it means the same
process. START is the process's start time (clock ticks after boot, from
``/proc/PID/stat``): a pid that was used again by a later process is no longer the
runner. TOKEN tells runners of one process apart (tests run several).

A holder counts as gone only when that is certain: its HOST is ours and its pid is
free, a zombie, or a process started at another time. A name of the older form
``NODE:PID:TOKEN`` (a server before an upgrade) counts as gone when NODE is the
runner's own and the pid is free, as that version took them back at its start. Any
other name is left to its lease.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunnerName", "holder_gone", "runner_name", "this_host"]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class RunnerName:
    """The parts of a runner's name."""

    node: str
    host: str
    pid: int
    start: int
    token: str

    def __str__(self) -> str:
        return f"{self.node}:{self.host}:{self.pid}.{self.start}:{self.token}"

    @classmethod
    def parse(cls, name: str) -> RunnerName | None:
        """The parts of `name`, or None when it is not a runner name of this format."""
        parts = name.rsplit(":", 3)
        if len(parts) != 4:
            return None
        node, host, process, token = parts
        pid, dot, start = process.partition(".")
        if not (dot and pid.isdigit() and start.isdigit() and node and host and token):
            return None
        return cls(node, host, int(pid), int(start), token)


@functools.cache
def this_host() -> str:
    """This machine and pid namespace, as runner names give it ("" when unknown)."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def _stat(pid: int) -> tuple[str, int]:
    """The state letter and start time of process `pid` (OSError when there is none)."""
    text = (_PROC / str(pid) / "stat").read_text()
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and ")"
    return fields[0], int(fields[19])


def runner_name(node: str) -> str:
    """A new name for a runner of this process on `node`."""
    pid = os.getpid()
    try:
        start = _stat(pid)[1]
    except (OSError, ValueError, IndexError):
        start = 0
    return str(RunnerName(node, this_host(), pid, start, secrets.token_hex(4)))


def _pid_free(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another user: not one of ours, unless /proc says more
    return False


def holder_gone(name: str, node: str = "") -> bool:
    """Whether the runner named `name` is certainly not running any more (see above);
    `node` is the asking runner's, for names of the older form."""
    holder = RunnerName.parse(name)
    if holder is None:
        old_node, _, rest = name.partition(":")
        pid, _, token = rest.partition(":")
        legacy = bool(node) and old_node == node and pid.isdigit() and token.isalnum()
        return legacy and _pid_free(int(pid))
    host = this_host()
    if not host or holder.host != host:
        return False
    if _pid_free(holder.pid):
        return True
    try:
        state, start = _stat(holder.pid)
    except FileNotFoundError:
        return True  # it ended just now
    except (OSError, ValueError, IndexError):
        return False
    return state in ("Z", "X") or (holder.start != 0 and start != holder.start)

"""The server process's claims at start: its umask, one server per data dir, file modes.

`claim_data_dir` is the first thing `serve` and `dev` do: it takes an flock on
`DATA_DIR/poczta.pid` (the pid written inside) for the life of the process, so a second
server on the same data dir refuses to start instead of running beside the first. The
lock goes with the process: a pid file left by one that died blocks nobody.

Files are created private (umask 027 for the whole command line, explicit modes where
poczta creates its database, keys and message files); `warn_loose_modes` logs one line
per path of the data dir that someone else has opened up since.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import IO, Any

import click

from poczta.config import Config
from poczta.logs import log

__all__ = [
    "PID_FILE",
    "StartError",
    "claim_data_dir",
    "loose_modes",
    "restrict_umask",
    "warn_loose_modes",
]

PID_FILE = "poczta.pid"
UMASK = 0o027
DIR_MODE = 0o750
FILE_MODE = 0o600
LOOSE_BITS = 0o027  # group write, anything for others; group read is a deliberate choice

_HELD: list[int] = []  # the lock's descriptor, open until the process ends


class StartError(click.ClickException):
    """The server cannot start: one line naming what to fix, `poczta: TEXT`, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"poczta: {self.message}", err=True)


def restrict_umask() -> None:
    """Files and directories created from now on are not readable by others."""
    os.umask(os.umask(0) | UMASK)


def claim_data_dir(data_dir: Path, command: str) -> None:
    """Create the data dir if needed and hold its lock; StartError when another server has it."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    path = data_dir / PID_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise StartError(
            f"data dir {data_dir} is in use by {_command_of(holder)} (pid {holder or 'unknown'})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.append(fd)
    log("serve.data_dir", path=data_dir, command=command, pid=os.getpid())


def _command_of(pid: str) -> str:
    """'poczta serve' or 'poczta dev', as the process `pid` was started."""
    with contextlib.suppress(OSError, ValueError):
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
        for word in (b"serve", b"dev"):
            if word in argv:
                return f"poczta {word.decode()}"
    return "poczta"


def loose_modes(config: Config) -> list[tuple[Path, int, int]]:
    """(path, mode, wanted mode) of each path poczta keeps that others may read or change.

    The data dir, what it holds and one level below (not the message files: they are
    private as long as the directories above them are), and the TLS private key."""
    data_dir = config.data_dir
    paths = [data_dir]
    with contextlib.suppress(OSError):
        for entry in sorted(data_dir.iterdir()):
            paths.append(entry)
            if entry.is_dir() and not entry.is_symlink() and entry.name != "blobs":
                paths += sorted(entry.iterdir())
    paths += [data_dir / "blobs" / "tmp", config.tls.private_key]
    found: list[tuple[Path, int, int]] = []
    seen: set[Path] = set()
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        if path in seen:
            continue
        seen.add(path)
        mode = stat.S_IMODE(info.st_mode)
        if mode & LOOSE_BITS:
            found.append((path, mode, DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE))
    return found


def warn_loose_modes(config: Config) -> None:
    """One `security.loose_mode` warning per path of `loose_modes`; nothing is changed."""
    for path, mode, want in loose_modes(config):
        log(
            "security.loose_mode",
            logging.WARNING,
            path=path,
            mode=f"{mode:04o}",
            want=f"{want:04o}",
        )

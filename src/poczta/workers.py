"""Multi-process serving: the master that forks workers sharing the ports, forwards signals,
restarts a worker that dies and stops them all gracefully; and, before them, the store's
committer process (`poczta.store.sqlite.committer`), restarted when it dies and stopped last.

Every worker is a whole poczta (its own event loop, store connections and threads). The
master binds the listening sockets before it forks (and before it gives up root): one
copy of each per worker slot, sharing the port with SO_REUSEPORT, so the kernel spreads
new connections over the workers; a worker started again after a death takes the
slot's sockets, whose queued connections wait for it.

The master runs no event loop and no thread: it blocks the signals it handles and waits
for them (and for SIGCHLD) with `sigtimedwait`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from poczta.config import Config
from poczta.logs import log, set_log_context

__all__ = ["Master", "WorkerError", "worker_count"]

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
WATCHED = {*FORWARDED, signal.SIGCHLD}
STOP_MARGIN_SECONDS = 5.0  # beyond the workers' own grace period, before SIGKILL
QUICK_DEATH_SECONDS = 5.0  # a worker that dies sooner than this failed to start
MAX_QUICK_DEATHS = 5  # in a row: the workers cannot run, give up
RESTART_DELAY_SECONDS = 0.25  # doubled for each quick death in a row
COMMITTER_RESTART_SECONDS = 1.0
POLL_SECONDS = 0.5


class WorkerError(Exception):
    """The workers cannot run: they keep dying at start."""


def worker_count(config: Config) -> int:
    """`workers` of the config; 0 means one per CPU core this process may run on."""
    if config.workers:
        return config.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _exit_text(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"exit {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"


def _clean_exit(status: int) -> bool:
    return os.waitstatus_to_exitcode(status) in (0, -signal.SIGTERM, -signal.SIGINT)


@dataclass
class Master:
    """Forks `count` workers, each running `run_worker(slot)` to its end, and watches over them."""

    count: int
    run_worker: Callable[[int], None]
    grace: float
    run_committer: Callable[[], None] | None = None  # the store's committer process, if any
    close_listeners: Callable[[], None] | None = None  # the master's copies, once stopping
    committer: int | None = None  # its pid while it runs
    committer_due: float | None = None  # when to start it again after it died
    committer_started: float = 0.0
    committer_quick_deaths: int = 0  # in a row: back off, up to a minute between tries
    children: dict[int, tuple[float, int]] = field(default_factory=dict)  # pid → started, slot
    restarts: list[tuple[float, int]] = field(default_factory=list)  # when, which slot
    quick_deaths: int = 0
    stopping: bool = False
    unclean: int = 0  # workers that did not stop cleanly once asked to

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit code: 0 after a clean stop."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            if self.run_committer is not None:
                self._spawn_committer(mask)
            for slot in range(self.count):
                self._spawn(mask, slot)
            return self._supervise(mask)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _spawn(self, mask: Iterable[int], slot: int) -> None:
        pid = self._fork(mask, lambda: self.run_worker(slot), "worker")
        self.children[pid] = (time.monotonic(), slot)
        log("worker.started", pid=pid)

    def _spawn_committer(self, mask: Iterable[int]) -> None:
        assert self.run_committer is not None
        self.committer = self._fork(mask, self.run_committer, "committer")
        self.committer_due = None
        self.committer_started = time.monotonic()
        log("committer.started", pid=self.committer)

    def _fork(self, mask: Iterable[int], target: Callable[[], None], role: str) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(mask, target, role)
        return pid

    def _child(self, mask: Iterable[int], target: Callable[[], None], role: str) -> NoReturn:
        code = 1
        try:
            # A SIGHUP before the worker's loop handles it must not end the worker.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            set_log_context(**{role: os.getpid()})
            target()
            code = 0
        except KeyboardInterrupt:
            code = 0  # SIGINT before the worker's loop took it over: a stop, nothing to finish
        except BaseException:
            logging.getLogger("poczta").exception("%s failed", role)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _supervise(self, mask: Iterable[int]) -> int:
        while True:
            info = signal.sigtimedwait(WATCHED, POLL_SECONDS)
            self._reap()
            if info is not None and info.si_signo == signal.SIGHUP:
                self._signal_all(signal.SIGHUP)
            elif info is not None and info.si_signo != signal.SIGCHLD:
                return self._stop(signal.Signals(info.si_signo))
            if self.quick_deaths >= MAX_QUICK_DEATHS:
                log(
                    "workers.giving_up",
                    logging.ERROR,
                    reason=f"{self.quick_deaths} workers in a row died within "
                    f"{QUICK_DEATH_SECONDS:g}s of starting; see the lines above",
                )
                self._stop(signal.SIGTERM)
                return 1
            now = time.monotonic()
            if self.committer_due is not None and self.committer_due <= now:
                self._spawn_committer(mask)
            for due in [r for r in self.restarts if r[0] <= now]:
                self.restarts.remove(due)
                self._spawn(mask, due[1])

    def _reap(self) -> None:
        while self.children or self.committer is not None:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.committer:
                self._committer_ended(status)
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            started, slot = child
            lived = time.monotonic() - started
            log("worker.stopped", pid=pid, status=_exit_text(status), uptime=f"{lived:.1f}s")
            if self.stopping:
                self.unclean += not _clean_exit(status)
                continue
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
            delay = RESTART_DELAY_SECONDS * 2**self.quick_deaths
            self.restarts.append((time.monotonic() + delay, slot))

    def _committer_ended(self, status: int) -> None:
        """Workers deliver through their own writers meanwhile; start it again soon."""
        log("committer.stopped", pid=self.committer, status=_exit_text(status))
        self.committer = None
        if self.stopping:
            return
        quick = time.monotonic() - self.committer_started < QUICK_DEATH_SECONDS
        self.committer_quick_deaths = self.committer_quick_deaths + 1 if quick else 0
        delay = COMMITTER_RESTART_SECONDS * 2 ** min(self.committer_quick_deaths, 6)
        self.committer_due = time.monotonic() + delay

    def _stop_committer(self) -> None:
        """After the workers: it may still be answering the deliveries they finished."""
        pid = self.committer
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_MARGIN_SECONDS
        while self.committer is not None and time.monotonic() < deadline:
            signal.sigtimedwait(WATCHED, POLL_SECONDS)
            self._reap()
        if self.committer is not None:
            log("committer.killed", logging.WARNING, pid=pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.committer = None
            self.unclean += 1

    def _signal_all(self, signum: signal.Signals) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _stop(self, signum: signal.Signals) -> int:
        """Ask every worker to stop; SIGKILL those still running after the grace period."""
        self.stopping = True
        self.restarts.clear()
        if self.close_listeners is not None:  # the workers' copies close as they stop
            self.close_listeners()
        log("workers.stopping", signal=signum.name, workers=len(self.children))
        self._signal_all(signum)
        deadline = time.monotonic() + self.grace + STOP_MARGIN_SECONDS
        while self.children and (left := deadline - time.monotonic()) > 0:
            signal.sigtimedwait(WATCHED, min(POLL_SECONDS, left))  # a second SIGTERM: no news
            self._reap()
        if self.children:
            log("workers.killed", logging.WARNING, pids=",".join(map(str, self.children)))
            self._signal_all(signal.SIGKILL)
            for pid in list(self.children):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            self.unclean += len(self.children)
            self.children.clear()
        self._stop_committer()
        log("workers.stopped", clean=not self.unclean)
        return 1 if self.unclean else 0

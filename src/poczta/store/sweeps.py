"""When a store sweeps released message bodies by itself: once their grace period is over.

Shared by the backends' `BlobStore`s: a write that may release bodies asks for a sweep
(`SweepSchedule.later`); at most one is pending or running at a time, and none starts
once the store is closing (`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["SweepSchedule"]

log = logging.getLogger("poczta.store")


class SweepSchedule:
    """Runs `sweep` once the grace period of what was released has passed."""

    def __init__(self, sweep: Callable[[], Awaitable[int]], grace: float) -> None:
        self._sweep = sweep
        self.grace = grace
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[int] | None = None
        self._running = True

    def later(self, delay: float | None = None) -> None:
        """Sweep in `delay` seconds (None: once bodies released now may go), unless a sweep
        is pending already."""
        if self._timer is not None or not self._running:
            return
        delay = self.grace + 1.0 if delay is None else delay
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if not self._running or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.ensure_future(self._sweep())
        self._task.add_done_callback(_log_failure)

    async def stop(self) -> None:
        """No more sweeps by itself; wait for the one running, if any."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _log_failure(task: asyncio.Future[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("sweeping released message bodies failed: %s", task.exception())

"""A clock for tests: `clock()` answers `clock.now`, which the test moves by hand."""

from __future__ import annotations


class Clock:
    """Seconds that pass only when a test sets or adds to `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

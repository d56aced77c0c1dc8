"""How a whole-store copy reports its progress: steps with a total, advanced as they go."""

from __future__ import annotations

from typing import Protocol

__all__ = ["CopyProgress", "NoProgress"]


class CopyProgress(Protocol):
    def start(self, step: str, total: int, done: int = 0) -> None:
        """A new step (a table copied or verified) of `total` items, `done` of them already."""
        ...

    def advance(self, items: int, *, octets: int = 0) -> None:
        """`items` more of the step are done (and committed, while copying)."""
        ...

    def finish(self) -> None: ...


class NoProgress:
    """Reports nothing."""

    def start(self, step: str, total: int, done: int = 0) -> None:
        pass

    def advance(self, items: int, *, octets: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass

"""The error of the PostgreSQL backend's set-up: the store cannot be used, and why, in a line."""

from __future__ import annotations

from poczta.store.base import StoreUnavailable

__all__ = ["PostgresUnavailable"]


class PostgresUnavailable(StoreUnavailable):
    """The database cannot be used as the store. `key` is the `[store]` setting to look at
    ("dsn" or "password_file"); `reason` says what is wrong, without any password."""

    def __init__(self, reason: str, *, key: str = "dsn") -> None:
        self.reason = " ".join(reason.split())
        self.key = key
        super().__init__(f"postgres store: {self.reason}")

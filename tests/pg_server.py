"""The PostgreSQL server for tests: its own cluster in a temporary directory.

The cluster itself (`PostgresServer`: `initdb`, `postgres` with `fsync` and
`synchronous_commit` on, as the unprivileged `postgres` user when run as root, password
logins for `admin` and `poczta`, `new_database()`) lives in `bench/pg_cluster.py`, which
the benchmarks start their own cluster with too. Here: where the binaries are, the one
cluster of a test session (`SessionCluster`), and `postgres_server()` for a test that
wants one of its own. Tests skip when the binaries are not installed (Debian:
postgresql, which `make test` installs).
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.pg_cluster import PostgresServer, find_pg_bin

from tests.e2e.harness import free_port

__all__ = ["PG_BIN", "PostgresServer", "SessionCluster", "find_pg_bin", "postgres_server"]

NOT_INSTALLED = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
PG_BIN = find_pg_bin()


def new_cluster_root() -> Path:
    # Not under pytest's own temporary folder: that one is private to this user, and the
    # cluster's user must reach its directory.
    return Path(tempfile.mkdtemp(prefix="poczta-pg-"))


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started cluster in a new temporary directory, removed after the server stops."""
    if PG_BIN is None:
        pytest.skip(NOT_INSTALLED)
    server = PostgresServer(new_cluster_root(), PG_BIN, free_port())
    try:
        server.start()
        yield server
    finally:
        server.remove()


class SessionCluster:
    """The one cluster of a test session, started in a thread of its own as soon as the
    session knows a test will want it (`begin`), so that its `initdb` runs while other
    tests do; `server()` waits for it."""

    def __init__(self) -> None:
        self._server: PostgresServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def begin(self) -> None:
        if PG_BIN is None or self._thread is not None:
            return
        self._server = PostgresServer(new_cluster_root(), PG_BIN, free_port())
        self._thread = threading.Thread(target=self._start, name="postgres-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        assert self._server is not None
        try:
            self._server.start()
        except BaseException as exc:  # reported by server(), in the test that asks
            self._error = exc

    def server(self) -> PostgresServer:
        if PG_BIN is None:
            pytest.skip(NOT_INSTALLED)
        self.begin()
        assert self._thread is not None and self._server is not None
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"the test PostgreSQL did not start: {self._error}")
        return self._server

    def end(self) -> None:
        if self._thread is not None and self._server is not None:
            self._thread.join()
            self._server.remove()

"""Waiting for the database write lock held by another connection (another worker process)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from poczta.store.sqlite import writer as sqlite_writer
from poczta.store.sqlite.writer import begin_immediate, connect


def test_begin_immediate_waits_for_the_other_writer(tmp_path: Path) -> None:
    holder, waiter = connect(tmp_path / "db"), connect(tmp_path / "db")
    waiter.execute("PRAGMA busy_timeout = 0")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    begin_immediate(waiter)
    waited = time.monotonic() - started
    release.join()
    assert waiter.in_transaction
    assert 0.04 <= waited < 1.0
    waiter.execute("ROLLBACK")
    holder.close()
    waiter.close()


def test_begin_immediate_gives_up_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "BUSY_TIMEOUT_SECONDS", 0.05)
    holder, waiter = connect(tmp_path / "db"), connect(tmp_path / "db")
    waiter.execute("PRAGMA busy_timeout = 0")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter)
    holder.execute("ROLLBACK")
    holder.close()
    waiter.close()

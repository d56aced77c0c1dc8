"""Schema migrations for the SQLite store: the numbered SQL files applied in order, once each.

Each file in `migrations/` is named `NNNN_description.sql`. `migrate` applies, in
ascending order, every file whose number is not yet in `schema_version` (so one that
landed after a higher-numbered one is still applied), each in its own transaction
together with its `schema_version` row, so running it again (or after a crash in the
middle) is harmless.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from importlib import resources

__all__ = ["Migration", "available_migrations", "current_version", "migrate"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Migration = tuple[int, str, str]  # (version, file name, SQL text)


def available_migrations() -> list[Migration]:
    """The packaged migrations, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("poczta.store.sqlite").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    return found


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
    )
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the pending migrations in order; return the versions applied."""
    applied: list[int] = []
    current_version(conn)  # creates the table
    done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_version")}
    for number, name, sql in migrations if migrations is not None else available_migrations():
        if number in done:
            continue
        stamp = datetime.now(UTC).isoformat()
        record = (
            f"INSERT INTO schema_version (version, name, applied)"
            f" VALUES ({number}, '{name}', '{stamp}');"
        )
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n{record}\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        applied.append(number)
    return applied

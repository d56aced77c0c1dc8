"""Where a whole-store copy reads and writes: the configured store as its source, and the
target named on the command line, `postgresql://USER@HOST:PORT/DATABASE` (its password
from a file or $PGPASSWORD, as `[store] password_file` has it) or `sqlite:DIR`, a data
directory (the database `poczta.db` and the bodies under `blobs/`, the layout a config
with `data_dir = DIR` uses by default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from poczta.config_schema import StoreSettings
from poczta.store.copy.tables import CopyError, StoreTables

if TYPE_CHECKING:
    from poczta.config import Config

__all__ = ["open_source", "open_target"]

SQLITE_PREFIX = "sqlite:"
_PG_SCHEMES = ("postgresql://", "postgres://")
TARGET_FORMS = "postgresql://USER@HOST:PORT/DATABASE or sqlite:DIR"


async def open_source(config: Config) -> StoreTables:
    """The store the config names, opened as its server would open it."""
    if config.store.backend == "postgres":
        from poczta.store.postgres.dump import PostgresTables

        return await PostgresTables.open(config.store, config.data_dir)
    from poczta.store.sqlite.dump import SqliteTables

    return await SqliteTables.open(
        config.store.path.resolve(), (config.data_dir / "blobs").resolve(), sync=config.store.sync
    )


async def open_target(
    target: str, *, password_file: Path | None = None, environ: Mapping[str, str] = os.environ
) -> StoreTables:
    """The store `target` names, made (SQLite) or migrated (PostgreSQL) if need be."""
    if target.startswith(SQLITE_PREFIX):
        folder = target[len(SQLITE_PREFIX) :]
        if not folder:
            raise CopyError(f"sqlite: needs a data directory: {TARGET_FORMS}")
        from poczta.store.sqlite.dump import SqliteTables

        root = Path(folder).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True, mode=0o750)
        return await SqliteTables.open(root / StoreSettings().path, root / "blobs", create=True)
    if target.startswith(_PG_SCHEMES):
        from poczta.store.postgres.dump import PostgresTables

        settings = StoreSettings(
            backend="postgres",
            dsn=target,
            password_file=str(password_file.resolve()) if password_file else "",
        )
        return await PostgresTables.open(settings, Path.cwd(), environ)
    raise CopyError(f"the target must be {TARGET_FORMS}, not {target!r}")

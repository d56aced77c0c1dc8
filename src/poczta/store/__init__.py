"""The mail store package: the store's interfaces and `open_store`, which picks a backend.

Callers import records, errors and `open_store` from here; the interfaces are in `base`
(`MailStore` with its `BlobStore` and `SendingStore`; the greylisting state it keeps is
a `poczta.mailauth.greylist.GreylistStore`), the records in `records`. `open_store` and
`run_committer` are the one place that picks a backend by `[store] backend`: SQLite by
default (`poczta.store.sqlite`: a database file plus a directory of content-addressed
message bodies), under the data directory; or PostgreSQL (`poczta.store.postgres`:
everything, bodies too, in the database `[store] dsn` names, its schema migrated on
opening).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from poczta.store.base import (
    DEFAULT_MAILBOXES,
    SPECIAL_USES,
    SYSTEM_FLAGS,
    Accepted,
    AddressBook,
    AddressEntry,
    AlreadyExists,
    BlobStore,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
    LimitExceeded,
    MailboxChange,
    MailboxId,
    MailboxState,
    MailStore,
    MessageMeta,
    MessageSummary,
    NotFound,
    Outbound,
    QueueEntry,
    QueueId,
    QueueRecipient,
    Resolution,
    SendingStore,
    StoreError,
    StoreUnavailable,
    UserId,
    UserRecord,
    normalize_address,
    normalize_flags,
)

if TYPE_CHECKING:
    from poczta.config import Config

__all__ = [
    "DEFAULT_MAILBOXES",
    "SPECIAL_USES",
    "SYSTEM_FLAGS",
    "Accepted",
    "AddressBook",
    "AddressEntry",
    "AlreadyExists",
    "BlobStore",
    "Delivered",
    "DeliveryTarget",
    "FlagMode",
    "FlagResult",
    "LimitExceeded",
    "MailStore",
    "MailboxChange",
    "MailboxId",
    "MailboxState",
    "MessageMeta",
    "MessageSummary",
    "NotFound",
    "Outbound",
    "QueueEntry",
    "QueueId",
    "QueueRecipient",
    "Resolution",
    "SendingStore",
    "StoreError",
    "StoreUnavailable",
    "UserId",
    "UserRecord",
    "normalize_address",
    "normalize_flags",
    "open_store",
    "run_committer",
]


async def open_store(config: Config, *, committer: bool = False) -> MailStore:
    """The configured store, its bodies, greylisting and sending limits beside it. With
    `committer` (a worker of several) deliveries go through the committer process when
    it runs (`run_committer`)."""
    if config.store.backend == "postgres":
        from poczta.store.postgres.store import PostgresStore

        return await PostgresStore.open(config.store, config.data_dir)
    db_path, blob_dir = _sqlite_files(config)
    from poczta.store.sqlite.committer import committer_address
    from poczta.store.sqlite.store import SqliteStore

    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    return await SqliteStore.open(
        db_path,
        blob_dir,
        blob_sync=config.store.sync,
        committer=committer_address(db_path) if committer else None,
    )


def run_committer(config: Config, *, ready: Callable[[], None] | None = None) -> None:
    """The committer process of a server with several workers, which group-commits the
    deliveries of all of them (see `poczta.store.sqlite.committer`): serves until
    SIGTERM/SIGINT, which the master sends once every worker has stopped."""
    db_path, blob_dir = _sqlite_files(config)
    from poczta.store.sqlite.committer import run_committer as run_sqlite_committer

    run_sqlite_committer(db_path, blob_dir, config.store.sync, ready=ready)


def _sqlite_files(config: Config) -> tuple[Path, Path]:
    """The database file and body directory of the SQLite backend, the one backend with a
    committer process (PostgreSQL group-commits the writes of every worker itself)."""
    if config.store.backend != "sqlite":
        raise StoreUnavailable(f"store backend {config.store.backend!r} has no committer")
    return config.store.path, config.data_dir / "blobs"

"""The mail store package: the `MailStore` interface and `open_store`, which picks a backend.

Callers import records, errors and `open_store` from here; the SQLite backend is the
default (a database file plus a directory of content-addressed message bodies).
"""

from __future__ import annotations

from pathlib import Path

from poczta.store.base import (
    DEFAULT_MAILBOXES,
    SPECIAL_USES,
    SYSTEM_FLAGS,
    Accepted,
    AlreadyExists,
    Delivered,
    DeliveryTarget,
    FlagMode,
    FlagResult,
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
    StoreError,
    StoreUnavailable,
    UserId,
    UserRecord,
    normalize_address,
    normalize_flags,
)

__all__ = [
    "DEFAULT_MAILBOXES",
    "SPECIAL_USES",
    "SYSTEM_FLAGS",
    "Accepted",
    "AlreadyExists",
    "Delivered",
    "DeliveryTarget",
    "FlagMode",
    "FlagResult",
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
    "StoreError",
    "StoreUnavailable",
    "UserId",
    "UserRecord",
    "normalize_address",
    "normalize_flags",
    "open_store",
]


async def open_store(data_dir: Path | str) -> MailStore:
    """The default store under `data_dir`: `mail.db` and the `blobs/` directory."""
    from poczta.store.sqlite.store import SqliteStore

    root = Path(data_dir)
    return await SqliteStore.open(root / "mail.db", root / "blobs")

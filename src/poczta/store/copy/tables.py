"""What a whole-store copy moves: the tables in copy order, their columns in one neutral
shape both backends read and write, and the interface each backend's dump implements.

A row is a tuple of neutral values, one per `Column`, whatever the backend keeps:
text, int, float, bool, flags as a sorted tuple of names, JSON as its text, and times as
aware datetimes. The kinds of time say how SQLite writes them (`Kind.TIME` is ISO 8601
as given, `Kind.QUEUE_TIME` ISO 8601 in UTC with microseconds, `Kind.ZONED_TIME` keeps
its offset, which PostgreSQL stores in a `<name>_zone` column beside the instant).

Derived data is left out and rebuilt by the target: quota usage and SQLite's message
counts per mailbox (triggers), SQLite's FETCH wire text (made from the cached envelope
and structure), PostgreSQL's chunking of bodies and its internal body ids.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC
from enum import Enum
from typing import Any, Protocol

from poczta.store.base import StoreError

__all__ = [
    "BLOBS",
    "TABLES",
    "Column",
    "CopyError",
    "Counters",
    "Kind",
    "Row",
    "StoreTables",
    "Table",
    "row_digest",
]

Row = tuple[Any, ...]


class CopyError(StoreError):
    """A copy that cannot go on or did not come out identical, in one line."""


class Kind(Enum):
    TEXT = "text"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    FLAGS = "flags"
    JSON = "json"
    TIME = "time"
    QUEUE_TIME = "queue_time"
    ZONED_TIME = "zoned_time"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind = Kind.TEXT


@dataclass(frozen=True, slots=True)
class Table:
    """A table of the store; rows are read in the order of `key` (its primary key), so an
    interrupted copy goes on after the last key it committed."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def key_of(self, row: Row) -> tuple[Any, ...]:
        names = self.column_names
        return tuple(row[names.index(name)] for name in self.key)


def _table(name: str, key: str, columns: str) -> Table:
    """A table from its key's column names and its columns, `name` or `name:kind`."""
    made = []
    for spec in columns.split():
        column, _, kind = spec.partition(":")
        made.append(Column(column, Kind(kind or "text")))
    return Table(name, tuple(made), tuple(key.split()))


BLOBS = _table("blobs", "digest", "digest size:int refs:int released:float")

#: Every table in copy order: each after those its rows refer to. `blobs` comes with its
#: bodies, before the messages and queue entries that use them.
TABLES: tuple[Table, ...] = (
    _table("domains", "name", "name created:time"),
    _table("users", "id", "id:int address domain password_hash scram created:time"),
    _table("aliases", "source target", "source target domain"),
    _table("quota_limits", "user_id", "user_id:int storage:int messages:int"),
    _table(
        "sending_limits",
        "user_id",
        "user_id:int messages_per_hour:int recipients_per_message:int recipients_per_day:int",
    ),
    _table("sending_usage", "user_id minute", "user_id:int minute:int messages:int recipients:int"),
    _table("subscriptions", "user_id name", "user_id:int name"),
    _table(
        "mailboxes",
        "id",
        "id:int user_id:int name special_use uidvalidity:int uidnext:int highestmodseq:int"
        " recent_uid:int",
    ),
    BLOBS,
    _table(
        "messages",
        "mailbox_id uid",
        "mailbox_id:int uid:int modseq:int flags:flags internal_date:zoned_time size:int digest"
        " header_size:int sent_date:zoned_time subject message_id envelope:json headers:json"
        " structure:json",
    ),
    _table("expunged", "mailbox_id uid", "mailbox_id:int uid:int modseq:int"),
    _table(
        "queue",
        "id",
        "id:int sender digest size:int created:queue_time next_attempt:queue_time attempts:int"
        " last_error envid ret held:bool delay_warned:bool claimed_by claimed_until:queue_time",
    ),
    _table(
        "queue_recipients",
        "queue_id address",
        "queue_id:int address status last_error attempts:int reply_code:int reply_enhanced"
        " remote_mta tls notify orcpt reported:bool last_attempt:queue_time",
    ),
    _table(
        "greylist_triplets",
        "network sender recipient",
        "network sender recipient first_seen:float last_seen:float passed_at:float"
        " attempts:int expires:float",
    ),
    _table(
        "greylist_networks",
        "network",
        "network passes:int last_pass:float whitelisted_until:float expires:float",
    ),
    _table(
        "mta_sts_policies",
        "domain",
        "domain policy_id policy fetched:queue_time expires:queue_time",
    ),
)


@dataclass(frozen=True, slots=True)
class Counters:
    """What is not a row but must not go back on the target: the last UIDVALIDITY given
    (a mailbox made again must get a new one) and the highest queue id ever given (ids
    are never used twice)."""

    last_uidvalidity: int
    last_queue_id: int


def _canonical(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind in (Kind.TIME, Kind.QUEUE_TIME):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if kind is Kind.ZONED_TIME:
        return value.isoformat(timespec="microseconds")
    if kind is Kind.FLOAT:
        return repr(float(value))
    if kind is Kind.FLAGS:
        return list(value)
    return value


def row_digest(table: Table, row: Row) -> int:
    """A row's SHA-256 as a number: summed over a table, the same on both sides whatever
    order each backend lists its rows in."""
    values = [_canonical(c.kind, v) for c, v in zip(table.columns, row, strict=True)]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


class StoreTables(Protocol):
    """One backend's tables, read and written in the neutral shape (`poczta.store.sqlite.dump`,
    `poczta.store.postgres.dump`). Reading serves a copy's source and both sides of its
    verification; writing is for an empty target, each batch in one transaction with the
    copy's progress (`store_copy`, the marker of a copy under way)."""

    description: str

    async def close(self) -> None: ...

    async def read_rows(self, table: Table, after: Sequence[Any] | None, limit: int) -> list[Row]:
        """Up to `limit` rows in key order, after the key `after` (None: from the first)."""
        ...

    def read_bodies(self, digests: Sequence[str]) -> AsyncGenerator[tuple[str, bytes], None]:
        """The bytes of these bodies in chunks, each with its body's digest, body after body
        in the order given. A missing body gives no chunks (its digest then does not match
        unless it is empty); one that cannot be read fails with CopyError."""
        ...

    async def count(self, table: Table) -> int: ...

    async def counters(self) -> Counters: ...

    async def progress(self) -> dict[str, str] | None:
        """The marker of a copy under way: 'source' and, per table begun, its last key as
        JSON or "done"; None when there is no copy under way."""
        ...

    async def begin_copy(self, source: str) -> None:
        """Mark the store as the target of a copy of `source`."""
        ...

    async def write_rows(self, table: Table, rows: Sequence[Row], mark: str) -> None:
        """Insert rows and record `mark` as the table's progress, in one transaction."""
        ...

    async def write_bodies(
        self, rows: Sequence[Row], bodies: Sequence[AsyncGenerator[bytes, None]], mark: str
    ) -> None:
        """Store bodies with their `blobs` rows (`rows[i]` is the row of `bodies[i]`) and
        record `mark` as the progress of `blobs`; a body already there is kept."""
        ...

    async def raise_counters(self, counters: Counters) -> None:
        """Make the target's counters at least `counters`."""
        ...

    async def finish_copy(self) -> None:
        """Rebuild derived data and remove the marker: the target is a plain store."""
        ...

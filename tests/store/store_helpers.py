"""Shared helpers of the store tests: sample messages, a user, one delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poczta.message import parse_message
from poczta.store import DeliveryTarget, MailStore, UserId
from poczta.store.sqlite.store import SqliteStore

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

Body = Callable[[MailStore], Awaitable[Any]]

BACKENDS = ("sqlite", "postgres")


@dataclass
class Backend:
    """Opens a fresh store of one kind and runs an async test body against it; a
    PostgreSQL one on a database of its own (`dsn`) on the session's `server`."""

    name: str
    root: Path
    server: PostgresServer | None = None
    dsn: str = ""

    async def open(self) -> MailStore:
        if self.name == "sqlite":
            return await SqliteStore.open(self.root / "mail.db", self.root / "blobs")
        if self.name == "postgres":
            from poczta.store.postgres.store import PostgresStore
            from tests.postgres.pg_helpers import store_settings

            assert self.server is not None
            data_dir = self.root / "data"
            return await PostgresStore.open(
                store_settings(self.server, self.dsn, data_dir), data_dir
            )
        raise NotImplementedError(self.name)

    def run(self, body: Body) -> Any:
        async def main() -> Any:
            store = await self.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())


WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = 10 * 86400.0  # seconds: long past the grace period of released bodies


def make_message(n: int = 0, size: int = 0, subject: str = "Hello") -> bytes:
    """A small CRLF message; `n` makes it distinct, `size` pads the body."""
    head = (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
        f"Subject: {subject} {n}\r\nDate: Tue, 2 Jan 2024 03:04:05 +0000\r\n"
        f"Message-ID: <{n}@example.org>\r\n\r\n"
    ).encode()
    body = f"body {n}\r\n".encode()
    if size > len(head) + len(body):
        body += b"x" * (size - len(head) - len(body) - 2) + b"\r\n"
    return head + body


async def deliver_one(store: MailStore, user: UserId, n: int = 0, mailbox: str = "INBOX") -> int:
    data = make_message(n)
    [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user, mailbox)])
    return done.uid


async def with_user(store: MailStore, address: str = "bob@example.com") -> UserId:
    domain = address.rpartition("@")[2]
    if not await store.domain_exists(domain):
        await store.add_domain(domain)
    return await store.add_user(address, "hash", "scram")

"""Delivery throughput of the SQLite store: N durable 4 KB deliveries with C concurrent callers.

Run: .venv/bin/python bench/store_deliver.py [N]. Prints deliveries/s for each way of
syncing blob directories (per body in the blob threads, or once per batch before the
commit), each the median of three runs. A measurement, not a test.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from poczta.message import parse_message
from poczta.store import DeliveryTarget
from poczta.store.sqlite import SqliteStore

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_message(n: int = 0, size: int = 0) -> bytes:
    """A CRLF message of about `size` octets; `n` makes it distinct."""
    head = (
        f"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
        f"Subject: bench {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\n"
    ).encode()
    body = f"body {n}\r\n".encode()
    if size > len(head) + len(body):
        body += b"x" * (size - len(head) - len(body) - 2) + b"\r\n"
    return head + body


async def measure(root: Path, count: int, callers: int, batch_dir_sync: bool) -> float:
    store = await SqliteStore.open(root / "mail.db", root / "blobs", batch_dir_sync=batch_dir_sync)
    try:
        await store.add_domain("example.com")
        user = await store.add_user("bob@example.com", "h", "s")
        messages = [make_message(n, size=4096) for n in range(count)]
        gate = asyncio.Semaphore(callers)

        async def one(data: bytes) -> None:
            async with gate:
                await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])

        start = time.perf_counter()
        await asyncio.gather(*(one(m) for m in messages))
        return count / (time.perf_counter() - start)
    finally:
        await store.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"{count} deliveries of 4 KB, deliveries/s (median of 3)")
    print(f"{'callers':>8} {'dir fsync per body':>20} {'dir fsync per batch':>20}")
    for callers in (1, 10, 50, 200):
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(3):
            for mode in (False, True):
                with tempfile.TemporaryDirectory() as root:
                    rates[mode].append(asyncio.run(measure(Path(root), count, callers, mode)))
        each, batch = (statistics.median(rates[m]) for m in (False, True))
        print(f"{callers:>8} {each:>20.0f} {batch:>20.0f}")


if __name__ == "__main__":
    main()

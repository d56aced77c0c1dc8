"""Delivery throughput of the SQLite store: N durable 4 KB deliveries with C concurrent callers.

Run: .venv/bin/python bench/store_deliver.py [N]. Prints deliveries/s and CPU per
delivery for 1, 10, 50 and 200 concurrent callers, each the median of three runs: the
store's own cost, without SMTP in front of it. A measurement, not a test.
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
from poczta.store.sqlite.store import SqliteStore

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


async def measure(root: Path, count: int, callers: int) -> float:
    store = await SqliteStore.open(root / "mail.db", root / "blobs")
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
    print(f"{count} deliveries of 4 KB (median of 3)")
    print(f"{'callers':>8} {'deliveries/s':>13} {'CPU us/delivery':>16}")
    for callers in (1, 10, 50, 200):
        rates: list[float] = []
        cpus: list[float] = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as root:
                before = time.process_time()
                rates.append(asyncio.run(measure(Path(root), count, callers)))
                cpus.append((time.process_time() - before) / count * 1e6)
        print(f"{callers:>8} {statistics.median(rates):>13.0f} {statistics.median(cpus):>16.0f}")


if __name__ == "__main__":
    main()

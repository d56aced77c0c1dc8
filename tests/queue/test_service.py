"""The runner of each worker of `poczta serve`: its share of the [outbound] limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from poczta.config import validate_text
from poczta.delivery import Delivery
from poczta.dns import ZoneResolver
from poczta.queue.service import build_runner, worker_share
from poczta.store.sqlite.store import SqliteStore


@given(st.integers(1, 1000), st.integers(1, 64))
def test_the_workers_shares_add_up_to_the_limit_and_each_has_one(total: int, workers: int) -> None:
    shares = [worker_share(total, workers, slot) for slot in range(workers)]
    assert min(shares) >= 1 and max(shares) - min(shares) <= 1
    assert sum(shares) == max(total, workers)


def test_each_worker_runs_with_its_share_of_the_outbound_limits(tmp_path: Path) -> None:
    config = validate_text(
        f'hostname = "mx.example.test"\ndata_dir = "{tmp_path}"\n'
        "\n[outbound]\nmax_connections = 101\nmax_per_domain = 5\nclaim_time = 30\n",
        "poczta.toml",
    )

    async def limits(slot: int) -> tuple[int, int, int, float]:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            resolver = ZoneResolver.from_mapping({})
            runner = build_runner(config, Delivery(store), resolver, slot=slot, workers=2)
            s = runner.settings
            return (
                s.max_connections,
                s.max_per_domain,
                runner.deliverer.cache.max_idle,
                s.claim_time,
            )
        finally:
            await store.close()

    # the connections kept idle for reuse are each worker's own, up to the whole limit
    assert asyncio.run(limits(0)) == (51, 3, 101, 30)  # each with the configured lease
    assert asyncio.run(limits(1)) == (50, 2, 101, 30)

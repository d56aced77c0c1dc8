"""Crash safety: a writer process killed with SIGKILL loses no acknowledged delivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from poczta.store import MailboxId
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import make_message

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from poczta.message import parse_message
    from poczta.store import DeliveryTarget
    from poczta.store.sqlite.store import SqliteStore
    from tests.store.store_helpers import WHEN, make_message

    async def main(root):
        store = await SqliteStore.open(root + "/mail.db", root + "/blobs")
        await store.add_domain("example.com")
        user = await store.add_user("bob@example.com", "h", "s")
        print("ready", user, flush=True)

        async def one(n):
            data = make_message(n, size=4096)
            [done] = await store.deliver(data, parse_message(data), WHEN, [DeliveryTarget(user)])
            print("ack", n, done.mailbox_id, done.uid, flush=True)

        n = 0
        while True:  # keep 20 deliveries in flight until killed
            await asyncio.gather(*(one(n + k) for k in range(20)))
            n += 20

    asyncio.run(main(sys.argv[1]))
    """
)


def test_acknowledged_deliveries_survive_sigkill(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(repo / "src")]))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=repo,
    )
    acked: list[tuple[int, int, int]] = []
    try:
        assert child.stdout is not None
        first = child.stdout.readline().split()
        assert first and first[0] == "ready", first
        while len(acked) < 150:
            line = child.stdout.readline()
            assert line, "the delivering process stopped early"
            _, n, box, uid = line.split()
            acked.append((int(n), int(box), int(uid)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    async def check() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            for n, box, uid in acked:
                assert await store.read_message(MailboxId(box), uid) == make_message(n, size=4096)
            metas = await store.fetch_meta(MailboxId(acked[0][1]))
            uids = [m.uid for m in metas]
            assert uids == sorted(set(uids))
            for meta in metas:  # no row without its body, acknowledged or not
                assert len(await store.blobs.read(meta.digest)) == meta.size
        finally:
            await store.close()

    asyncio.run(check())

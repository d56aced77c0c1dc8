"""For the queue's end-to-end tests: a counting SMTP sink in a thread of its own, and a
server's queue filled through its store before it starts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from poczta.config import load_config
from poczta.store import open_store
from tests.e2e.harness import PocztaServer
from tests.queue.peer import ScriptedMx

SINK = "127.0.0.2"


class SinkThread:
    """A `ScriptedMx` on its own event loop in a thread, so it outlives the server; it
    listens on `host` (SINK unless a server of the test listens there)."""

    def __init__(self, port: int, mx: ScriptedMx | None = None, host: str = SINK) -> None:
        self.mx = mx or ScriptedMx()
        self.port = port
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self.mx.session, self.host, self.port)
        )
        self.ready.set()
        self.loop.run_forever()
        server.close()

    def __enter__(self) -> SinkThread:
        self.thread.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, function: Callable[[], object]) -> None:
        """Run `function` on the sink's loop (to open its gate, say)."""
        self.loop.call_soon_threadsafe(function)

    def received(self) -> list[str]:
        return [r for message in list(self.mx.messages) for r in message.recipients]


def enqueue(server: PocztaServer, recipients: Sequence[str]) -> None:
    """Queue a message from alice to each of `recipients` through the server's store."""

    async def main() -> None:
        store = await open_store(load_config(server.config))

        async def queue_one(address: str) -> None:
            body = f"Subject: {address}\r\n\r\nhello\r\n".encode()
            digest = await store.blobs.put(body)
            await store.enqueue("alice@example.test", [address], digest, len(body))

        try:
            # a hundred at a time: the store writes their bodies and rows together, not one by one
            for start in range(0, len(recipients), 100):
                await asyncio.gather(*map(queue_one, recipients[start : start + 100]))
        finally:
            await store.close()

    asyncio.run(main())

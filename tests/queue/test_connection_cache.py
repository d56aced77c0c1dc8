"""The cache of idle outbound connections: which one `take` gives back, and when the
idle ones are sent QUIT (a test clock; the sweep is called as its timer would)."""

from __future__ import annotations

import asyncio
from typing import cast

from poczta.queue.connection import ConnectionCache, ConnectionKey, OutboundConnection

KEY = ConnectionKey("192.0.2.1", 25)
OTHER = ConnectionKey("192.0.2.2", 25)


class FakeConnection:
    """What the cache uses of a connection; records whether it was sent QUIT."""

    def __init__(self, key: ConnectionKey = KEY) -> None:
        self.key = key
        self.usable = True
        self.reused = False
        self.quitted = False

    async def quit(self) -> None:
        self.quitted = True

    def close(self) -> None:
        self.usable = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connections(count: int, key: ConnectionKey = KEY) -> list[FakeConnection]:
    return [FakeConnection(key) for _ in range(count)]


def put(cache: ConnectionCache, conn: FakeConnection) -> None:
    cache.put(cast(OutboundConnection, conn))


def take(cache: ConnectionCache, key: ConnectionKey) -> object:
    """What `take` gives, as the object the test put in."""
    return cache.take(key)


def test_take_gives_the_newest_idle_connection_of_its_key_only() -> None:
    async def test() -> None:
        cache = ConnectionCache(5.0, clock=Clock())
        first, second = connections(2)
        [other] = connections(1, OTHER)
        for conn in (first, second, other):
            put(cache, conn)
        assert take(cache, KEY) is second and second.reused
        assert take(cache, KEY) is first
        assert take(cache, KEY) is None
        assert take(cache, OTHER) is other
        assert len(cache) == 0
        await cache.close()

    asyncio.run(test())


def test_an_expired_connection_is_never_taken_and_gets_quit() -> None:
    async def test() -> None:
        clock = Clock()
        cache = ConnectionCache(5.0, clock=clock)
        old, newer = connections(2)
        put(cache, old)
        clock.now += 3
        put(cache, newer)
        clock.now += 3  # `old` has been idle 6 s, `newer` 3 s
        assert take(cache, KEY) is newer
        assert take(cache, KEY) is None
        await cache.close()
        assert old.quitted and not newer.quitted

    asyncio.run(test())


def test_the_sweep_quits_the_expired_and_the_unusable_and_keeps_the_rest() -> None:
    async def test() -> None:
        clock = Clock()
        cache = ConnectionCache(5.0, clock=clock)
        old, broken, fresh = connections(3)
        put(cache, old)
        clock.now += 4
        put(cache, broken)
        put(cache, fresh)
        broken.usable = False
        clock.now += 2
        cache.expire()
        await asyncio.sleep(0)  # the QUITs run as tasks
        assert old.quitted and broken.quitted and not fresh.quitted
        assert len(cache) == 1 and take(cache, KEY) is fresh
        await cache.close()

    asyncio.run(test())


def test_past_max_idle_a_connection_is_quit_instead_of_kept() -> None:
    async def test() -> None:
        cache = ConnectionCache(5.0, max_idle=2, clock=Clock())
        kept = connections(2)
        [extra] = connections(1, OTHER)
        for conn in (*kept, extra):
            put(cache, conn)
        await asyncio.sleep(0)
        assert extra.quitted and len(cache) == 2
        cache.take(KEY)
        put(cache, extra := FakeConnection(OTHER))
        assert take(cache, OTHER) is extra
        await cache.close()
        assert all(c.quitted for c in kept[:1])

    asyncio.run(test())


def test_closing_quits_every_idle_connection() -> None:
    async def test() -> None:
        cache = ConnectionCache(5.0, clock=Clock())
        idle = connections(3) + connections(2, OTHER)
        for conn in idle:
            put(cache, conn)
        await cache.close()
        assert all(c.quitted for c in idle) and len(cache) == 0
        assert take(cache, KEY) is None

    asyncio.run(test())

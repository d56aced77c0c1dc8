"""MX plans kept between messages: reused while the DNS answers behind them are cached
unchanged, never after one changed or expired, and still drawn in a new order among
equal preferences for each message. The resolver's cache is filled by the test, so no
query leaves the machine."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping

from poczta.dns import DnsCache, DnsPythonResolver, MxRecord, ZoneResolver
from poczta.queue.mx import MxAnswers, MxFailure, MxPlan, MxPlans, mx_answers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_resolver(clock: Clock) -> DnsPythonResolver:
    cache = DnsCache(clock=clock)
    # An address that answers nothing: a lookup the cache cannot answer fails fast.
    resolver = DnsPythonResolver(["127.0.0.1"], port=9, timeout=0.2, lifetime=0.2, cache=cache)
    mx = [MxRecord(10, "a.example.test"), MxRecord(10, "b.example.test")]
    cache.put(("example.test", "MX"), mx, 300, negative=False)
    for host, address in (("a.example.test", "192.0.2.1"), ("b.example.test", "192.0.2.2")):
        cache.put((host, "A"), [address], 300, negative=False)
        cache.put((host, "AAAA"), [], 300, negative=True)
    return resolver


def names(plan: MxPlan | MxFailure) -> list[str]:
    assert isinstance(plan, MxPlan), plan
    return [h.name for h in plan.hosts]


def test_the_answers_are_reused_and_the_order_is_drawn_per_message() -> None:
    async def test() -> None:
        resolver = cached_resolver(Clock())
        plans = MxPlans(resolver)
        rng = random.Random(3)
        first = names(await plans.plan("example.test", rng=rng))
        lookups = resolver.cache.hits + resolver.cache.misses
        orders = {tuple(names(await plans.plan("example.test", rng=rng))) for _ in range(40)}
        assert resolver.cache.hits + resolver.cache.misses == lookups  # no lookup again
        assert sorted(first) == ["a.example.test", "b.example.test"]
        assert orders == {
            ("a.example.test", "b.example.test"),
            ("b.example.test", "a.example.test"),
        }

    asyncio.run(test())


def test_a_changed_answer_is_used_at_once() -> None:
    async def test() -> None:
        resolver = cached_resolver(Clock())
        plans = MxPlans(resolver)
        rng = random.Random(3)
        await plans.plan("example.test", rng=rng)
        resolver.cache.put(("b.example.test", "A"), ["192.0.2.7"], 300, negative=False)
        plan = await plans.plan("example.test", rng=rng)
        assert isinstance(plan, MxPlan)
        assert {h.name: h.addresses for h in plan.hosts}["b.example.test"] == ("192.0.2.7",)

    asyncio.run(test())


def test_an_expired_answer_is_looked_up_again() -> None:
    async def test() -> None:
        clock = Clock()
        resolver = cached_resolver(clock)
        plans = MxPlans(resolver, ttl=3600)
        rng = random.Random(3)
        assert isinstance(await plans.plan("example.test", rng=rng), MxPlan)
        clock.now += 301  # every answer's TTL ran out; the server answers nothing
        failed = await plans.plan("example.test", rng=rng)
        assert isinstance(failed, MxFailure) and not failed.permanent

    asyncio.run(test())


def test_other_resolvers_are_asked_for_every_message() -> None:
    async def test() -> None:
        resolver = ZoneResolver()
        resolver.add("example.test", "MX", (10, "a.example.test"))
        resolver.add("a.example.test", "A", "192.0.2.1")
        plans = MxPlans(resolver)
        assert names(await plans.plan("example.test", rng=random.Random())) == ["a.example.test"]
        resolver.records["a.example.test"]["A"] = ["192.0.2.5"]
        plan = await plans.plan("example.test", rng=random.Random())
        assert isinstance(plan, MxPlan) and plan.hosts[0].addresses == ("192.0.2.5",)

    asyncio.run(test())


def test_a_plan_with_no_order_to_draw_is_made_once_for_each_setting() -> None:
    async def test() -> None:
        zone: Mapping[str, Mapping[str, Iterable[object]]] = {
            "one.test": {"MX": [(10, "mx.one.test")]},
            "mx.one.test": {"A": ["127.0.0.1"]},
        }
        answers = await mx_answers(ZoneResolver.from_mapping(zone), "one.test")
        assert isinstance(answers, MxAnswers)
        rng = random.Random(1)
        remote = answers.plan(rng=rng, loopback_is_local=False)
        assert names(remote) == ["mx.one.test"]
        assert answers.plan(rng=rng, loopback_is_local=False) is remote
        looping = answers.plan(rng=rng, loopback_is_local=True)  # 127.0.0.1 is this machine
        assert isinstance(looping, MxFailure) and looping.enhanced == "5.4.6"
        assert answers.plan(rng=rng, local_addresses=("127.0.0.1",), loopback_is_local=False) == (
            looping
        )
        assert answers.plan(rng=rng, loopback_is_local=False) is remote

    asyncio.run(test())

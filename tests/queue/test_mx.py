"""The MX plan: order, implicit and null MX, odd exchanges, loops, DNS failures, the limit."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from hypothesis import given
from hypothesis import strategies as st

from poczta.dns import MxRecord, ZoneResolver
from poczta.queue.mx import (
    HostAddresses,
    MxFailure,
    MxPlan,
    mx_plan,
    order_mx,
    plan_from_answers,
)

Zone = dict[str, Mapping[str, Iterable[object]]]  # a zone the test may change


def plan(
    zone: Mapping[str, Mapping[str, Iterable[object]]],
    domain: str = "example.test",
    *,
    local_addresses: Collection[str] = (),
    loopback_is_local: bool = True,
) -> MxPlan | MxFailure:
    resolver = ZoneResolver.from_mapping(zone)
    return asyncio.run(
        mx_plan(
            resolver,
            domain,
            rng=random.Random(7),
            local_addresses=local_addresses,
            loopback_is_local=loopback_is_local,
        )
    )


def hosts(result: MxPlan | MxFailure) -> list[tuple[str, tuple[str, ...]]]:
    assert isinstance(result, MxPlan), result
    return [(h.name, h.addresses) for h in result.hosts]


ZONE: dict[str, dict[str, list[object]]] = {
    "example.test": {"MX": [(20, "backup.example.test"), (10, "mx1.example.test")]},
    "mx1.example.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "backup.example.test": {"A": ["192.0.2.9"]},
}


def test_preference_order_with_every_address() -> None:
    assert hosts(plan(ZONE)) == [
        ("mx1.example.test", ("192.0.2.1", "2001:db8::1")),
        ("backup.example.test", ("192.0.2.9",)),
    ]


def test_equal_preferences_are_shuffled_by_the_injected_source() -> None:
    records = [MxRecord(10, f"mx{i}.example.test") for i in range(4)] + [
        MxRecord(5, "first.example.test")
    ]
    firsts: Counter[str] = Counter()
    for seed in range(200):
        ordered = order_mx(records, random.Random(seed))
        assert ordered[0].exchange == "first.example.test"
        assert [r.preference for r in ordered] == [5, 10, 10, 10, 10]
        firsts[ordered[1].exchange] += 1
    assert set(firsts) == {f"mx{i}.example.test" for i in range(4)}
    assert order_mx(records, random.Random(3)) == order_mx(records, random.Random(3))


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from("abcdef")), min_size=1, max_size=8, unique=True
    ),
    st.integers(),
)
def test_order_is_a_sorted_permutation(pairs: list[tuple[int, str]], seed: int) -> None:
    records = [MxRecord(p, f"{n}.example.test") for p, n in pairs]
    ordered = order_mx(records, random.Random(seed))
    assert sorted(ordered, key=repr) == sorted(records, key=repr)
    assert [r.preference for r in ordered] == sorted(r.preference for r in records)


def test_no_mx_means_the_domain_itself() -> None:
    result = plan({"example.test": {"A": ["192.0.2.5"], "TXT": ["x"]}})
    assert hosts(result) == [("example.test", ("192.0.2.5",))]
    assert isinstance(result, MxPlan) and result.implicit


def test_no_mx_and_no_address_is_permanent() -> None:
    result = plan({"example.test": {"TXT": ["x"]}})
    assert isinstance(result, MxFailure) and result.permanent
    assert result.enhanced == "5.4.4"


def test_null_mx_accepts_no_mail() -> None:
    result = plan({"example.test": {"MX": [(0, ".")], "A": ["192.0.2.5"]}})
    assert result == MxFailure(
        "example.test", True, "5.1.10", "domain example.test accepts no mail (null MX)"
    )


def test_a_domain_that_does_not_exist_is_permanent() -> None:
    result = plan({}, "nowhere.test")
    assert isinstance(result, MxFailure) and result.permanent and result.enhanced == "5.1.2"


def test_dns_trouble_on_the_mx_lookup_is_temporary() -> None:
    resolver = ZoneResolver.from_mapping(ZONE)
    resolver.servfail.add("example.test")
    result = asyncio.run(mx_plan(resolver, "example.test", rng=random.Random(1)))
    assert isinstance(result, MxFailure) and not result.permanent and result.enhanced == "4.4.3"


def test_exchanges_without_addresses_are_skipped() -> None:
    zone = dict(ZONE)
    zone["example.test"] = {"MX": [(5, "gone.example.test"), *ZONE["example.test"]["MX"]]}
    zone["empty.example.test"] = {"TXT": ["x"]}
    assert [n for n, _ in hosts(plan(zone))] == ["mx1.example.test", "backup.example.test"]


def test_no_exchange_with_an_address_is_permanent_unless_dns_failed() -> None:
    zone: dict[str, dict[str, list[object]]] = {
        "example.test": {"MX": [(10, "a.example.test"), (20, "b.example.test")]}
    }
    result = plan(zone)
    assert isinstance(result, MxFailure) and result.permanent
    assert result.text == "no MX host for example.test has a valid address record"
    resolver = ZoneResolver.from_mapping(zone)
    resolver.timeout.add("b.example.test")
    result = asyncio.run(mx_plan(resolver, "example.test", rng=random.Random(1)))
    assert isinstance(result, MxFailure) and not result.permanent


def test_a_temporary_failure_for_one_exchange_skips_only_it() -> None:
    resolver = ZoneResolver.from_mapping(ZONE)
    resolver.servfail.add("mx1.example.test")
    result = asyncio.run(mx_plan(resolver, "example.test", rng=random.Random(1)))
    assert hosts(result) == [("backup.example.test", ("192.0.2.9",))]


def test_a_numeric_exchange_is_used_as_its_address_with_a_warning() -> None:
    result = plan({"example.test": {"MX": [(10, "192.0.2.77")]}})
    assert hosts(result) == [("192.0.2.77", ("192.0.2.77",))]
    assert isinstance(result, MxPlan)
    assert result.warnings == ("numeric domain name in MX record for example.test: 192.0.2.77",)


def test_a_malformed_exchange_is_skipped() -> None:
    zone = dict(ZONE)
    zone["example.test"] = {"MX": [(1, "[192.0.2.1]"), *ZONE["example.test"]["MX"]]}
    result = plan(zone)
    assert [n for n, _ in hosts(result)] == ["mx1.example.test", "backup.example.test"]
    assert isinstance(result, MxPlan) and "malformed" in result.warnings[0]


def test_mail_to_localhost_loops_back() -> None:
    result = plan({"example.test": {"MX": [(10, "localhost")]}})
    assert isinstance(result, MxFailure) and result.permanent and result.enhanced == "5.4.6"
    result = plan(
        {"example.test": {"MX": [(10, "mx.example.test")]}, "mx.example.test": {"A": ["127.0.0.1"]}}
    )
    assert isinstance(result, MxFailure) and result.enhanced == "5.4.6"


def test_this_machine_as_backup_mx_truncates_the_list() -> None:
    zone: Zone = {
        "example.test": {
            "MX": [
                (10, "primary.example.test"),
                (20, "us.example.test"),
                (30, "worse.example.test"),
            ]
        },
        "primary.example.test": {"A": ["192.0.2.1"]},
        "us.example.test": {"A": ["198.51.100.7"]},
        "worse.example.test": {"A": ["192.0.2.3"]},
    }
    result = plan(zone, local_addresses={"198.51.100.7"})
    assert hosts(result) == [("primary.example.test", ("192.0.2.1",))]
    del zone["primary.example.test"]
    result = plan(zone, local_addresses={"198.51.100.7"})
    assert isinstance(result, MxFailure) and not result.permanent and result.enhanced == "4.4.4"


def test_loopback_may_be_allowed_for_tests() -> None:
    zone: Zone = {
        "example.test": {"MX": [(10, "mx.example.test")]},
        "mx.example.test": {"A": ["127.0.0.1"]},
    }
    assert hosts(plan(zone, loopback_is_local=False)) == [("mx.example.test", ("127.0.0.1",))]


def test_at_most_five_addresses_best_first() -> None:
    answers = {
        f"mx{i}.example.test": HostAddresses((f"192.0.2.{10 * i + 1}", f"192.0.2.{10 * i + 2}"))
        for i in range(4)
    }
    records = [MxRecord(i, f"mx{i}.example.test") for i in range(4)]
    result = plan_from_answers("example.test", records, answers, rng=random.Random(0))
    assert hosts(result) == [
        ("mx0.example.test", ("192.0.2.1", "192.0.2.2")),
        ("mx1.example.test", ("192.0.2.11", "192.0.2.12")),
        ("mx2.example.test", ("192.0.2.21",)),
    ]


def test_addresses_that_are_no_addresses_are_dropped() -> None:
    answers = {"mx.example.test": HostAddresses(("not-an-ip", "192.0.2.4"))}
    records = [MxRecord(10, "mx.example.test")]
    result = plan_from_answers("example.test", records, answers, rng=random.Random(0))
    assert hosts(result) == [("mx.example.test", ("192.0.2.4",))]


def test_a_unicode_domain_is_looked_up_as_its_a_label() -> None:
    zone: Zone = {"xn--bcher-kva.test": {"A": ["192.0.2.8"]}}
    result = plan(zone, "bücher.test")
    assert hosts(result) == [("xn--bcher-kva.test", ("192.0.2.8",))]

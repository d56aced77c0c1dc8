"""Fetching MTA-STS policies over HTTPS: a policy server on loopback with a test CA's
certificate, its host name published in an in-memory zone."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from poczta.dns import ZoneResolver
from poczta.queue.mta_sts import MAX_POLICY_SIZE
from poczta.queue.mta_sts_fetch import PolicyFetcher, PolicyFetchError
from tests.certificates import TestCa
from tests.e2e.harness import free_port
from tests.queue.policy_server import PolicyServer, serving_policies

POLICY = b"version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n"
HOST = "mta-sts.example.org"


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture
def server(ca: TestCa, tmp_path: Path) -> Iterator[PolicyServer]:
    with serving_policies(ca.issue(HOST).server_context(tmp_path)) as running:
        running.policies[HOST] = POLICY
        yield running


def fetcher(ca: TestCa, port: int, *addresses: str, **kw: float) -> PolicyFetcher:
    zone = ZoneResolver.from_mapping({HOST: {"A": list(addresses or ["127.0.0.1"])}})
    return PolicyFetcher(zone, ca.client_context(), port=port, **kw)


def fetch(policies: PolicyFetcher, domain: str = "example.org") -> bytes:
    return asyncio.run(policies.fetch(domain))


def failure(policies: PolicyFetcher, domain: str = "example.org") -> str:
    with pytest.raises(PolicyFetchError) as info:
        fetch(policies, domain)
    return str(info.value)


def test_the_policy_is_fetched_from_the_well_known_address(
    ca: TestCa, server: PolicyServer
) -> None:
    assert fetch(fetcher(ca, server.port), "Example.ORG.") == POLICY
    assert server.requests == [(HOST, "/.well-known/mta-sts.txt")]


def test_the_next_address_is_tried_when_one_does_not_answer(
    ca: TestCa, server: PolicyServer
) -> None:
    assert fetch(fetcher(ca, server.port, "127.0.0.9", "127.0.0.1")) == POLICY


def test_a_certificate_for_another_name_is_refused(ca: TestCa, tmp_path: Path) -> None:
    with serving_policies(ca.issue("mta-sts.example.net").server_context(tmp_path)) as other:
        other.policies[HOST] = POLICY
        error = failure(fetcher(ca, other.port))
    assert "certificate verify failed" in error and "mta-sts.example.org" in error
    assert other.requests == []


def test_a_certificate_of_an_untrusted_ca_is_refused(server: PolicyServer) -> None:
    stranger = TestCa("another CA")
    assert "certificate verify failed" in failure(fetcher(stranger, server.port))
    assert server.requests == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((404, {}, b"gone"), "HTTP 404"),
        ((500, {}, b"oops"), "HTTP 500"),
        ((301, {"Location": f"https://{HOST}/elsewhere"}, b""), "HTTP 301"),
        ((200, {}, b"x" * (MAX_POLICY_SIZE + 1)), "over 65536 octets"),
        ((200, {"Content-Length": None}, b"x" * (MAX_POLICY_SIZE + 1)), "over 65536 octets"),
    ],
)
def test_only_a_200_with_a_policy_of_bounded_size_counts(
    ca: TestCa,
    server: PolicyServer,
    answer: tuple[int, dict[str, str | None], bytes],
    expected: str,
) -> None:
    server.policies[HOST] = answer
    assert expected in failure(fetcher(ca, server.port))
    assert len(server.requests) == 1  # a redirect is not followed


def test_a_policy_host_without_an_address(ca: TestCa) -> None:
    assert failure(fetcher(ca, 443), "other.org") == "mta-sts.other.org: no such host"


def test_a_policy_server_that_is_down(ca: TestCa) -> None:
    port = free_port()  # nothing listens there
    assert "127.0.0.1" in failure(fetcher(ca, port))


def test_a_policy_server_that_never_answers_runs_into_the_deadline(ca: TestCa) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = failure(fetcher(ca, port, timeout=0.3))
    assert error == f"{HOST}: no policy within 0.3 s"

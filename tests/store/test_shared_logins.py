"""Logins throttled through the store's shared counts, on each backend: two login services
sharing one store (two workers or nodes) refuse a guesser as one would. (That the store
counts exactly as the in-memory throttle does, unknown accounts included, is
`test_shared_limits`'s.)"""

from __future__ import annotations

import logging

import pytest

from poczta.accounts import LoginThrottle, hash_password
from poczta.login import LoginService
from poczta.sasl import derive_scram_credentials
from poczta.store import MailStore
from tests.clock import Clock
from tests.store.store_helpers import Backend

PASSWORD = "correct horse battery"
ANN = "ann@example.test"
ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"
T0 = 1_700_000_000.0


async def _services(store: MailStore, clock: Clock) -> list[LoginService]:
    """Two login services (of two nodes) on `store`, which holds ann; each password
    check costs an argon2 verification, so a client is refused after two failures."""
    await store.add_domain("example.test")
    scram = derive_scram_credentials(PASSWORD).to_string()
    await store.add_user(ANN, hash_password(PASSWORD), scram)
    shared = await store.shared_limits()
    throttles = [
        LoginThrottle(max_failures_per_ip_account=2, failure_delay=0.0, max_delay=0.0, clock=clock)
        for _ in range(2)
    ]
    return [LoginService(store, throttle, shared) for throttle in throttles]


def _reasons(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.fields["ip"], r.fields.get("reason", "ok"))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("auth.")
    ]


def test_guesses_spread_over_two_services_are_refused_as_on_one(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")

    async def body(store: MailStore) -> tuple[str | None, str | None, str | None]:
        nodes = await _services(store, Clock(T0))
        for n in range(6):
            assert await nodes[n % 2].check_password(ATTACKER, ANN, f"guess {n}", "pop3") is None
        attacker = await nodes[0].check_password(ATTACKER, ANN, PASSWORD, "pop3")
        owner = await nodes[1].check_password(OWNER, "Ann@Example.test", PASSWORD, "imap")
        again = await nodes[0].check_password(OWNER, ANN, PASSWORD, "submission")
        return attacker, owner, again

    assert backend.run(body) == (None, ANN, ANN)
    assert _reasons(caplog) == (
        [(ATTACKER, "bad credentials")] * 2 + [(ATTACKER, "throttled")] * 5 + [(OWNER, "ok")] * 2
    )

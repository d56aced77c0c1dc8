"""LoginService: password checks against a real store, throttling, upgrading old hashes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from argon2 import PasswordHasher

from poczta import login
from poczta.accounts import LoginThrottle, hash_password, needs_rehash, verify_password
from poczta.login import LoginService
from poczta.sasl import derive_scram_credentials
from poczta.store.sqlite.store import SqliteStore
from tests.clock import Clock

WAIT = 30.0  # seconds: a bound for a hung test, not a measurement


def _throttle() -> LoginThrottle:
    return LoginThrottle(failure_delay=0.0, max_delay=0.0)


async def _login_twice_with_legacy_hash(root: Path) -> tuple[str, str, str | None, str | None]:
    store = await SqliteStore.open(root / "mail.db", root / "blobs")
    try:
        await store.add_domain("example.test")
        legacy = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4).hash("s3cret")
        scram = derive_scram_credentials("s3cret").to_string()
        await store.add_user("ann@example.test", legacy, scram)
        service = LoginService(store, _throttle())
        first = await service.check_password("127.0.0.1", "Ann@example.test", "s3cret", "pop3")
        await service.rehashed()  # replaced after the answer
        user = await store.get_user("ann@example.test")
        assert user is not None
        wrong = await service.check_password("127.0.0.2", "ann@example.test", "nope", "pop3")
        return legacy, user.password_hash, first, wrong
    finally:
        await store.close()


def test_login_upgrades_a_legacy_hash_and_keeps_the_password(tmp_path: Path) -> None:
    legacy, upgraded, first, wrong = asyncio.run(_login_twice_with_legacy_hash(tmp_path))
    assert first == "ann@example.test"
    assert wrong is None
    assert upgraded != legacy
    assert not needs_rehash(upgraded)
    assert verify_password(upgraded, "s3cret")
    assert not verify_password(upgraded, "nope")


def test_logins_are_answered_while_old_hashes_are_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehash happens after the answer, and other logins' checks do not wait for it."""
    release = threading.Event()
    real_hash = login.hash_password

    def held_hash(password: str) -> str:
        release.wait(WAIT)
        return real_hash(password)

    monkeypatch.setattr(login, "hash_password", held_hash)

    async def main() -> tuple[list[str | None], list[str], list[str]]:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            await store.add_domain("example.test")
            light = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
            scram = derive_scram_credentials("s3cret").to_string()
            for name in ("ann", "bob", "cid"):
                await store.add_user(f"{name}@example.test", light.hash("s3cret"), scram)
            service = LoginService(store, _throttle())
            answers = [
                await service.check_password("127.0.0.1", f"{name}@example.test", "s3cret", "imap")
                for name in ("ann", "bob", "cid", "ann")
            ]
            before = [u.password_hash for u in await store.list_users()]
            release.set()
            await service.rehashed()
            after = [u.password_hash for u in await store.list_users()]
            return answers, before, after
        finally:
            await store.close()

    answers, before, after = asyncio.run(main())
    assert answers == [f"{name}@example.test" for name in ("ann", "bob", "cid", "ann")]
    assert all(needs_rehash(h) for h in before)  # every answer came before any new hash
    assert not any(needs_rehash(h) for h in after)
    assert all(verify_password(h, "s3cret") for h in after)


# --------------------------------------------------------------------------- throttling

PASSWORD = "correct horse battery"
ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"


T = TypeVar("T")


def _with_service(
    root: Path, scenario: Callable[[LoginService], Awaitable[T]], clock: Clock | None = None
) -> T:
    """Run `scenario` against a login service whose store holds ann@example.test."""

    async def run() -> T:
        store = await SqliteStore.open(root / "mail.db", root / "blobs")
        try:
            await store.add_domain("example.test")
            scram = derive_scram_credentials(PASSWORD).to_string()
            await store.add_user("ann@example.test", hash_password(PASSWORD), scram)
            throttle = LoginThrottle(failure_delay=0.0, max_delay=0.0, clock=clock or Clock())
            return await scenario(LoginService(store, throttle))
        finally:
            await store.close()

    return asyncio.run(run())


def _auth_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    """(event, ip, reason or user) of every auth.* line logged so far."""
    return [
        (r.getMessage(), r.fields["ip"], r.fields.get("reason", r.fields["user"]))  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("auth.")
    ]


async def _attack_then_owner_logs_in(service: LoginService) -> tuple[str | None, str | None]:
    for _ in range(20):
        await service.check_password(ATTACKER, "ann@example.test", "guess", "submission")
    owner = await service.check_password(OWNER, "Ann@example.test", PASSWORD, "submission")
    attacker = await service.check_password(ATTACKER, "ann@example.test", PASSWORD, "pop3")
    return owner, attacker


def test_an_attacker_cannot_lock_the_owner_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")
    owner, attacker = _with_service(tmp_path, _attack_then_owner_logs_in)
    assert owner == "ann@example.test"
    assert attacker is None  # refused without a look at the password
    lines = _auth_lines(caplog)
    assert lines[:5] == [("auth.failed", ATTACKER, "bad credentials")] * 5
    assert lines[5:20] == [("auth.failed", ATTACKER, "throttled")] * 15
    assert lines[20:] == [
        ("auth.ok", OWNER, "ann@example.test"),
        ("auth.failed", ATTACKER, "throttled"),
    ]


def _guess(account: str) -> Callable[[LoginService], Awaitable[list[str | None]]]:
    async def scenario(service: LoginService) -> list[str | None]:
        return [await service.check_password(ATTACKER, account, "guess", "pop3") for _ in range(7)]

    return scenario


def test_an_unknown_account_is_throttled_like_a_real_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="poczta")
    real = _with_service(tmp_path / "real", _guess("ann@example.test"))
    real_reasons = [reason for _, _, reason in _auth_lines(caplog)]
    caplog.clear()
    unknown = _with_service(tmp_path / "unknown", _guess("nobody@example.test"))
    unknown_reasons = [reason for _, _, reason in _auth_lines(caplog)]
    assert real == unknown == [None] * 7
    assert real_reasons == unknown_reasons == ["bad credentials"] * 5 + ["throttled"] * 2


def test_refused_attempts_do_not_prolong_the_block(tmp_path: Path) -> None:
    clock = Clock()

    async def keep_trying_while_refused(service: LoginService) -> str | None:
        for _ in range(5):
            await service.check_password(ATTACKER, "ann@example.test", "guess", "pop3")
        for _ in range(29):  # refused every ten seconds, until the window is nearly over
            clock.now += 10
            await service.check_password(ATTACKER, "ann@example.test", "guess", "pop3")
        clock.now += 11  # the five real failures are 301 seconds old now
        return await service.check_password(ATTACKER, "ann@example.test", PASSWORD, "pop3")

    assert _with_service(tmp_path, keep_trying_while_refused, clock) == "ann@example.test"


async def _scram_success_then_failures(service: LoginService) -> list[bool]:
    blocked = []
    for _ in range(4):
        await service.failed(OWNER, "ann@example.test", "pop3", "scram")
    service.succeeded(OWNER, "ann@example.test", "pop3")
    for _ in range(4):
        await service.failed(OWNER, "ann@example.test", "pop3", "scram")
        blocked.append(service.throttle.is_blocked(OWNER, "ann@example.test"))
    await service.failed(OWNER, "ann@example.test", "pop3", "scram")
    blocked.append(service.throttle.is_blocked(OWNER, "ann@example.test"))
    return blocked


def test_a_scram_success_clears_the_clients_failures_for_the_account(tmp_path: Path) -> None:
    assert _with_service(tmp_path, _scram_success_then_failures) == [False] * 4 + [True]

"""LoginService: password checks against a real store, and upgrading old hashes at login."""

from __future__ import annotations

import asyncio
from pathlib import Path

from argon2 import PasswordHasher

from poczta.accounts import LoginThrottle, needs_rehash, verify_password
from poczta.login import LoginService
from poczta.sasl import derive_scram_credentials
from poczta.store.sqlite import SqliteStore


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

"""After the machine went down with the store open, UIDNEXT and HIGHESTMODSEQ move past
anything a reader may have seen; a clean shutdown or a killed process moves nothing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from poczta.store import MailboxState
from poczta.store.sqlite import shutdown as sqlite_shutdown
from poczta.store.sqlite.store import SqliteStore
from tests.store.store_helpers import deliver_one, with_user

ROOT = Path(__file__).resolve().parents[2]


def _die_with_the_store_open(tmp_path: Path, messages: int) -> None:
    """A process that delivers `messages` and exits without closing the store."""
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from poczta.store.sqlite.store import SqliteStore
        from tests.store.store_helpers import deliver_one, with_user

        async def main():
            store = await SqliteStore.open({str(tmp_path / "mail.db")!r},
                                           {str(tmp_path / "blobs")!r})
            user = await with_user(store)
            for n in range({messages}):
                await deliver_one(store, user, n)
            os._exit(0)

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


def _inbox(tmp_path: Path) -> MailboxState:
    async def main() -> MailboxState:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            user = await store.get_user("bob@example.com")
            assert user is not None
            return await store.get_mailbox(user.id, "INBOX")
        finally:
            await store.close()

    return asyncio.run(main())


def _marker(tmp_path: Path) -> str:
    return (tmp_path / "mail.db.running").read_text()


def test_a_machine_restart_with_the_store_open_skips_the_numbers_handed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _die_with_the_store_open(tmp_path, 3)
    assert _marker(tmp_path).startswith("running ")
    monkeypatch.setattr(sqlite_shutdown, "boot_id", lambda: "a-later-boot")
    with caplog.at_level(logging.WARNING, logger="poczta.store"):
        inbox = _inbox(tmp_path)
    assert inbox.messages == 3
    # 3 messages: UIDNEXT was 4; now past the margin and the user's message count
    assert inbox.uidnext == 4 + sqlite_shutdown.MARGIN + 3
    assert inbox.highestmodseq > sqlite_shutdown.MARGIN
    assert "not shut down cleanly" in caplog.text
    assert _marker(tmp_path) == "clean\n"
    assert _inbox(tmp_path).uidnext == inbox.uidnext  # once only


def test_a_killed_process_moves_nothing(tmp_path: Path) -> None:
    _die_with_the_store_open(tmp_path, 2)  # same boot: the kernel had every commit
    assert _inbox(tmp_path).uidnext == 3


def test_a_clean_shutdown_moves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        try:
            await deliver_one(store, await with_user(store))
        finally:
            await store.close()

    asyncio.run(main())
    assert _marker(tmp_path) == "clean\n"
    assert _inbox(tmp_path).uidnext == 2


def test_only_the_last_writer_to_close_marks_a_clean_shutdown(tmp_path: Path) -> None:
    async def main() -> None:
        first = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        second = await SqliteStore.open(tmp_path / "mail.db", tmp_path / "blobs")
        await first.close()
        assert _marker(tmp_path).startswith("running ")
        await second.close()
        assert _marker(tmp_path) == "clean\n"

    asyncio.run(main())

"""`poczta store copy` on the command line: the summary, one-line errors, and a copy killed
with SIGKILL that a second run finishes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from poczta.store.postgres.dump import PostgresTables
from tests.e2e.harness import POCZTA, free_port, run_cli
from tests.postgres.pg_helpers import connect, store_settings
from tests.store_copy.copy_helpers import body_files, sqlite_tables

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer


def _copy_args(original: Path, target: str, password_file: Path | None = None) -> list[str]:
    extra = ["--password-file", str(password_file)] if password_file else []
    return ["store", "copy", "--data-dir", str(original), "--to", target, *extra]


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("poczta: "), result.stderr
    return lines[0]


def test_copy_to_sqlite_prints_what_it_copied_and_refuses_a_second_run(
    original: Path, tmp_path: Path
) -> None:
    target = f"sqlite:{tmp_path / 'copy'}"
    done = run_cli(*_copy_args(original, target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert rows[0] == ["table", "rows", "copied now", "verified"]
    assert ["messages", "10", "10", "same"] in rows
    assert ["queue_recipients", "2", "2", "same"] in rows
    assert rows[-1] == [
        "copied and verified: 67 rows, 11 bodies (0.6 MB), every body matching its digest"
    ]
    assert sqlite_tables(tmp_path / "copy" / "poczta.db") == sqlite_tables(original / "poczta.db")
    again = run_cli(*_copy_args(original, target), cwd=tmp_path)
    assert "is not empty (2 rows in domains)" in _one_line_error(again)


def test_errors_are_one_line(postgres: PostgresServer, postgres_dsn: str,
                             original: Path, tmp_path: Path) -> None:  # fmt: skip
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    refused = _one_line_error(run_cli(*_copy_args(original, postgres_dsn, wrong), cwd=tmp_path))
    assert "refused the password of poczta" in refused
    malformed = run_cli(*_copy_args(original, "postgresql://poczta@[::1/x"), cwd=tmp_path)
    assert "the URL is malformed" in _one_line_error(malformed)
    nobody = f"postgresql://poczta@127.0.0.1:{free_port()}/mail"
    unreachable = _one_line_error(run_cli(*_copy_args(original, nobody), cwd=tmp_path))
    assert "cannot connect to 127.0.0.1:" in unreachable
    unknown = _one_line_error(run_cli(*_copy_args(original, "mysql://x/y"), cwd=tmp_path))
    assert "must be postgresql://USER@HOST:PORT/DATABASE or sqlite:DIR" in unknown
    missing = _one_line_error(run_cli(*_copy_args(tmp_path / "none", "sqlite:x"), cwd=tmp_path))
    assert f"there is no SQLite store at {tmp_path / 'none' / 'poczta.db'}" in missing
    asyncio.run(_migrated(postgres, postgres_dsn, tmp_path, newer=True))
    newer = run_cli(*_copy_args(original, postgres_dsn, postgres.password_file), cwd=tmp_path)
    assert "newer than this poczta knows" in _one_line_error(newer)


async def _wait_for_blocked_insert(conn: asyncpg.Connection, child: subprocess.Popen[str]) -> None:
    """Until the copy waits for the lock on `messages` (its bodies are in by then)."""
    while child.poll() is None:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'messages'::regclass AND NOT granted"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the copy ended (status {child.returncode}) before it was killed")


def test_a_copy_killed_midway_is_finished_by_the_next_run(
    postgres: PostgresServer, postgres_dsn: str, original: Path, tmp_path: Path
) -> None:
    args = _copy_args(original, postgres_dsn, postgres.password_file)
    asyncio.run(_migrated(postgres, postgres_dsn, tmp_path))  # its tables, to lock one

    async def kill_while_blocked() -> None:
        conn = await connect(postgres, postgres_dsn)
        try:
            async with conn.transaction():
                # SHARE: the copy may read (count) the table, not insert into it
                await conn.execute("LOCK TABLE messages IN SHARE MODE")
                child = subprocess.Popen(
                    [*POCZTA, *args], cwd=tmp_path, text=True,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    await _wait_for_blocked_insert(conn, child)
                finally:
                    os.kill(child.pid, signal.SIGKILL)
                    child.wait()
        finally:
            await conn.close()

    asyncio.run(kill_while_blocked())
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1].startswith("copied (resumed) and verified: 67 rows")
    assert ["blobs", "11", "0", "same"] in [
        line.split("\t") for line in resumed.stdout.splitlines()
    ]
    config = _postgres_config(tmp_path / "pg-config", postgres, postgres_dsn)
    back = tmp_path / "back"
    home = run_cli("store", "copy", "-c", str(config), "--to", f"sqlite:{back}", cwd=tmp_path)
    assert home.returncode == 0, home.stderr
    assert sqlite_tables(back / "poczta.db") == sqlite_tables(original / "poczta.db")
    assert body_files(back) == body_files(original)


async def _migrated(postgres: PostgresServer, dsn: str, root: Path, newer: bool = False) -> None:
    """The store's schema in the database at `dsn`; with `newer`, as a later poczta left it."""
    tables = await PostgresTables.open(store_settings(postgres, dsn, root / "pg"), root / "pg")
    await tables.close()
    if newer:
        conn = await connect(postgres, dsn)
        try:
            await conn.execute("INSERT INTO schema_version VALUES (999, '0999_later.sql')")
        finally:
            await conn.close()


def _postgres_config(root: Path, postgres: PostgresServer, dsn: str) -> Path:
    """A poczta.toml whose store is the database at `dsn`."""
    data = root / "data"
    data.mkdir(parents=True)
    secret = data / "pg-password"
    secret.write_text(postgres.password + "\n")
    secret.chmod(0o600)
    config = root / "poczta.toml"
    config.write_text(
        f'hostname = "mx.example.org"\ndata_dir = "data"\n'
        f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\npassword_file = "pg-password"\n'
    )
    return config

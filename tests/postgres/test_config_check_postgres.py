"""`poczta config check` with `backend = "postgres"`: a connection as `serve` would make,
its problems reported as file, line, key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from poczta.config_check import check_config
from poczta.net.tls import write_self_signed
from poczta.store.postgres.migrate import latest_version, migrate
from tests.e2e.harness import run_cli
from tests.pg_server import PostgresServer
from tests.postgres.pg_helpers import connect

LISTENERS = (
    '[listeners]\nsmtp = ["127.0.0.1:2525"]\nsubmission = []\nsubmissions = []\n'
    "pop3 = []\npop3s = []\nimap = []\nimaps = []\n"
)


@pytest.fixture(autouse=True)
def resolv_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's resolv.conf does not matter: a resolver is always configured."""
    import dns.resolver

    monkeypatch.setattr(dns.resolver, "Resolver", lambda: None)


def write_config(root: Path, postgres: PostgresServer, dsn: str, password: str) -> Path:
    """A servable config whose store is `dsn` (line 13), the password in data/pg-password."""
    write_self_signed(root / "data/tls/cert.pem", root / "data/tls/key.pem", "mx.test")
    secret = root / "data/pg-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    config = root / "poczta.toml"
    config.write_text(
        f'hostname = "mx.example.org"\ndata_dir = "data"\n{LISTENERS}'
        f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\npassword_file = "pg-password"\n'
    )
    return config


def problems(config: Path) -> list[str]:
    return [str(error).removeprefix(f"{config}:") for error in check_config(config)]


def test_a_reachable_database_has_no_problems(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    assert problems(write_config(tmp_path, postgres, postgres_dsn, postgres.password)) == []


def test_a_wrong_password_names_the_password_file(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, postgres, postgres_dsn, "not-the-password")
    where = postgres_dsn.removeprefix("postgresql://")
    expected = (
        f"14: store.password_file: {where}: the server refused the password of poczta"
        " (check [store] password_file)"
    )
    assert problems(config) == [expected]
    result = run_cli("config", "check", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"poczta: {config}:{expected}"]


def test_a_schema_newer_than_this_poczta(
    postgres: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    async def from_the_future() -> None:
        conn = await connect(postgres, postgres_dsn)
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, '9999_future.sql')",
            latest_version() + 1,
        )
        await conn.close()

    asyncio.run(from_the_future())
    config = write_config(tmp_path, postgres, postgres_dsn, postgres.password)
    database = postgres_dsn.rpartition("/")[2]
    assert problems(config) == [
        f"13: store.dsn: database '{database}' has schema version {latest_version() + 1},"
        f" newer than this poczta knows ({latest_version()}): upgrade poczta"
    ]

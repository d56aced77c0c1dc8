"""The command line as an admin uses it: init, config check, domains, users, aliases, errors."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import POCZTA

pytestmark = pytest.mark.e2e


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "POCZTA_CONFIG"}
    return subprocess.run(
        [*POCZTA, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, env=env
    )


def test_init_then_config_check_and_accounts(tmp_path: Path) -> None:
    result = run(
        "init",
        "--hostname",
        "mail.example.org",
        "--data-dir",
        "data",
        "--domain",
        "example.org",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "poczta.toml").is_file()
    assert (tmp_path / "data").is_dir()
    assert run("config", "check", "poczta.toml", cwd=tmp_path).returncode == 0

    assert run("domain", "list", "-c", "poczta.toml", cwd=tmp_path).stdout.split() == [
        "example.org"
    ]
    added = run(
        "user",
        "add",
        "-c",
        "poczta.toml",
        "Alice@Example.ORG",
        "--password-stdin",
        cwd=tmp_path,
        stdin="s3cret-password\n",
    )
    assert added.returncode == 0, added.stderr
    assert "alice@example.org" in run("user", "list", "-c", "poczta.toml", cwd=tmp_path).stdout
    assert (
        run(
            "alias", "add", "-c", "poczta.toml", "@example.org", "alice@example.org", cwd=tmp_path
        ).returncode
        == 0
    )
    assert "@example.org" in run("alias", "list", "-c", "poczta.toml", cwd=tmp_path).stdout

    dup = run(
        "user",
        "add",
        "-c",
        "poczta.toml",
        "alice@example.org",
        "--password-stdin",
        cwd=tmp_path,
        stdin="x-password\n",
    )
    assert dup.returncode != 0 and "Traceback" not in dup.stderr
    foreign = run(
        "user",
        "add",
        "-c",
        "poczta.toml",
        "eve@other.test",
        "--password-stdin",
        cwd=tmp_path,
        stdin="x-password\n",
    )
    assert foreign.returncode != 0 and "not a local domain" in foreign.stderr


def _stored_hash(root: Path, address: str) -> str:
    with sqlite3.connect(f"file:{root / 'data' / 'poczta.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT password_hash FROM users WHERE address = ?", (address,)).fetchone()
    return str(row[0])


def test_weak_passwords_are_refused_and_nothing_changes(tmp_path: Path) -> None:
    init = ("init", "--hostname", "mail.example.org", "--data-dir", "data")
    assert run(*init, "--domain", "example.org", cwd=tmp_path).returncode == 0
    config = tmp_path / "poczta.toml"
    text = config.read_text()
    config.write_text(text.replace("min_password_length = 10", "min_password_length = 12"))

    def user(command: str, password: str) -> subprocess.CompletedProcess[str]:
        args = ("user", command, "-c", "poczta.toml", "bob@example.org", "--password-stdin")
        return run(*args, cwd=tmp_path, stdin=password + "\n")

    for password, reason in [
        ("Tr0ub4dor&3", "it is shorter than 12 characters"),
        ("Password1234", "it is one of the most common passwords"),
        ("BOB@example.org", "it is the address or its local part"),
    ]:
        refused = user("add", password)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"Error: password refused: {reason}; nothing was changed"
        ]
    assert "bob@" not in run("user", "list", "-c", "poczta.toml", cwd=tmp_path).stdout
    assert user("add", "bob-likes-long-walks").returncode == 0
    before = _stored_hash(tmp_path, "bob@example.org")
    refused = user("passwd", "qwertyuiop123")
    assert refused.returncode == 1
    assert "it is one of the most common passwords" in refused.stderr
    assert _stored_hash(tmp_path, "bob@example.org") == before
    assert user("passwd", "bob-walks-even-longer").returncode == 0
    assert _stored_hash(tmp_path, "bob@example.org") != before


def test_config_check_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        'hostname = "mx.test"\ndata_dir = "d"\n\n[listeners]\nsmtp = ["nohost"]\nlisen = 3\n'
    )
    result = run("config", "check", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "bad.toml:" in result.stderr
    assert ":5:" in result.stderr or ":6:" in result.stderr


def test_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    missing = run("serve", "-c", "does-not-exist.toml", cwd=tmp_path)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "does-not-exist.toml" in missing.stderr
    noconf = run("user", "list", cwd=tmp_path)
    assert noconf.returncode != 0 and "Traceback" not in noconf.stderr


def test_help_everywhere(tmp_path: Path) -> None:
    for args in ([], ["user"], ["user", "add"], ["mail", "list"], ["dev"], ["config", "check"]):
        result = run(*args, "--help", cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage:" in result.stdout


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    version = run("--version", cwd=tmp_path).stdout
    script = Path(sys.executable).parent / "poczta"  # .venv/bin/poczta, which scripts rely on
    assert script.exists(), f"no console script at {script}"
    other = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert other.returncode == 0 and other.stdout == version
    assert version.startswith("poczta")

"""The command line as an admin uses it: init, config check, domains, users, aliases, errors.

Most commands run in this process (`tests.e2e.in_process`); those called through
`run_executable` run as the installed executable, so each family here runs as one too.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import POCZTA, free_port, wait_for_port
from tests.e2e.harness import run_cli as run
from tests.e2e.harness import run_cli_subprocess as run_executable

pytestmark = pytest.mark.e2e


def test_init_then_config_check_and_accounts(tmp_path: Path) -> None:
    result = run_executable(
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
    assert run_executable("config", "check", "poczta.toml", cwd=tmp_path).returncode == 0

    domains = run_executable("domain", "list", "-c", "poczta.toml", cwd=tmp_path).stdout
    assert domains.split() == ["example.org"]
    added = run_executable(
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
        run_executable(
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
            f"poczta: password refused: {reason}; nothing was changed"
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
    missing = run_executable("serve", "-c", "does-not-exist.toml", cwd=tmp_path)
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "does-not-exist.toml" in missing.stderr
    noconf = run_executable("user", "list", cwd=tmp_path)
    assert noconf.returncode != 0 and "Traceback" not in noconf.stderr


def test_help_everywhere(tmp_path: Path) -> None:
    for args in ([], ["user"], ["user", "add"], ["mail", "list"], ["dev"], ["config", "check"]):
        result = run(*args, "--help", cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage:" in result.stdout


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    version = run_executable("--version", cwd=tmp_path).stdout
    script = Path(sys.executable).parent / "poczta"  # .venv/bin/poczta, which scripts rely on
    assert script.exists(), f"no console script at {script}"
    other = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert other.returncode == 0 and other.stdout == version
    assert version.startswith("poczta")


def init_dir(root: Path) -> Path:
    """`poczta init` in `root`: ./poczta.toml, the data directory and its certificate
    (no system user: a test's temporary directory is closed to one)."""
    args = ("--hostname", "mx.example.org", "--data-dir", "data", "--user", "")
    result = run("init", *args, cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "poczta.toml"


def test_config_check_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "three.toml"
    port = free_port()  # no database server there
    config.write_text(
        'hostname = "mx.example.org"\n'  # 1
        'data_dir = "data"\n'  # 2
        "[limits]\n"  # 3
        'max_recipients = "lots"\n'  # 4
        "[store]\n"  # 5
        'backend = "postgres"\n'  # 6
        f'dsn = "postgresql://poczta@127.0.0.1:{port}/poczta"\n'  # 7
        "[tls]\n"  # 8
        'certificate = "/nonexistent/cert.pem"\n'  # 9
    )
    init_dir(tmp_path)  # the data directory and the key exist
    result = run("config", "check", "three.toml", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "poczta: three.toml:4: limits.max_recipients: expected an integer, found a string",
        f"poczta: three.toml:7: store.dsn: cannot connect to 127.0.0.1:{port}: Connection refused",
        "poczta: three.toml:9: tls.certificate: /nonexistent/cert.pem does not exist",
    ]


def test_config_check_reads_the_outbound_files(tmp_path: Path) -> None:
    config = init_dir(tmp_path)
    text = config.read_text()
    text = text.replace('relay = ""', 'relay = "smtp.example.net:587"')
    text = text.replace('mta_sts_ca_file = ""', 'mta_sts_ca_file = "sts-ca.pem"')
    config.write_text(text)
    passwords = tmp_path / "data" / "relay-passwords"
    passwords.write_text("smtp.example.net:587 alice:secret\n")
    passwords.chmod(0o644)
    lines = text.splitlines()
    password_line = lines.index('relay_password_file = "relay-passwords"') + 1
    sts_line = lines.index('mta_sts_ca_file = "sts-ca.pem"') + 1
    result = run("config", "check", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"poczta: poczta.toml:{password_line}: outbound.relay_password_file: {passwords}:"
        " readable by others (mode 644); chmod 600 it",
        f"poczta: poczta.toml:{sts_line}: outbound.mta_sts_ca_file:"
        f" {tmp_path / 'data' / 'sts-ca.pem'} does not exist",
    ]
    passwords.chmod(0o600)
    config.write_text(text.replace('"sts-ca.pem"', '""'))
    assert run("config", "check", cwd=tmp_path).returncode == 0


def test_config_check_finds_the_config_like_every_command(tmp_path: Path) -> None:
    init_dir(tmp_path)
    for args in (["-c", "poczta.toml"], ["poczta.toml"], []):
        result = run("config", "check", *args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.splitlines() == [
            f"poczta.toml: ok (hostname mx.example.org, data directory {tmp_path / 'data'})"
        ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_env = run(
        "config", "check", cwd=elsewhere, env={"POCZTA_CONFIG": str(tmp_path / "poczta.toml")}
    )
    assert by_env.returncode == 0 and by_env.stdout.startswith(f"{tmp_path}/poczta.toml: ok")
    none = run("config", "check", cwd=elsewhere)
    assert none.returncode == 1
    assert none.stderr.startswith("poczta: no config:") and len(none.stderr.splitlines()) == 1
    both = run("config", "check", "-c", "a.toml", "b.toml", cwd=tmp_path)
    assert both.returncode == 2 and "Usage:" in both.stderr


def test_serve_finds_its_config_through_the_environment(tmp_path: Path) -> None:
    config = init_dir(tmp_path)
    port = free_port()
    text = config.read_text().replace('"0.0.0.0:25"', f'"127.0.0.1:{port}"')
    for service in ("submission", "submissions", "pop3", "pop3s", "imap", "imaps"):
        text = re.sub(rf"(?m)^{service} = .*$", f"{service} = []", text)
    config.write_text(text.replace("enabled = true", "enabled = false"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = (tmp_path / "serve.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "POCZTA_CONFIG"}
    proc = subprocess.Popen(
        [*POCZTA, "serve"],
        cwd=elsewhere,
        env={**env, "POCZTA_CONFIG": str(config)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(100).startswith(b"220 mx.example.org")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    missing = run("serve", cwd=elsewhere)
    assert missing.returncode == 1 and missing.stderr.startswith("poczta: no config:")


def test_exit_codes_usage_two_operational_one(tmp_path: Path) -> None:
    for args in (["user", "list", "--frobnicate"], ["user", "remove"], ["mail", "move", "a"]):
        usage = run(*args, cwd=tmp_path)
        assert usage.returncode == 2, args
        assert "Usage:" in usage.stderr
    init_dir(tmp_path)
    run("domain", "add", "example.org", cwd=tmp_path)
    postgres = tmp_path / "postgres.toml"
    postgres.write_text(
        (tmp_path / "poczta.toml")
        .read_text()
        .replace('backend = "sqlite"', 'backend = "postgres"')
        .replace('dsn = ""', 'dsn = "postgresql://localhost/x"')
    )
    operational = [
        (["user", "list", "-c", "absent.toml"], "poczta: absent.toml: cannot read the file"),
        (["user", "remove", "--force", "nobody@example.org"], "poczta: no user nobody@example.org"),
        (["mail", "list", "nobody@example.org"], "poczta: no user nobody@example.org"),
        (["domain", "remove", "nowhere.test"], "poczta: no domain nowhere.test"),
        (["user", "list", "-c", "postgres.toml"], "poczta: postgres store: "),  # no server there
    ]
    for args, expected in operational:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.startswith(expected), (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and "Usage:" not in result.stderr

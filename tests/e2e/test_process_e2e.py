"""The server process as an admin meets it: private files, one server per data dir,
start errors that name the config key, listeners nothing serves."""

from __future__ import annotations

import os
import smtplib
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import POCZTA, PocztaServer, free_port, make_server

pytestmark = pytest.mark.e2e


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def deliver(server: PocztaServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as client:
        client.sendmail(
            "carol@elsewhere.test", ["alice@example.test"], f"Subject: {subject}\r\n\r\nbody\r\n"
        )


def test_files_are_private_and_a_loosened_one_is_warned_about(tmp_path: Path) -> None:
    server = make_server(tmp_path, services=("smtp",))
    server.start()
    deliver(server, "private")
    data = tmp_path / "data"
    db = data / "poczta.db"
    wal = data / "poczta.db-wal"
    assert wal.exists()  # while serving, the WAL holds the latest commits
    private = {p: mode(p) for p in (db, wal, data / "poczta.db-shm", data / "tls" / "key.pem")}
    assert server.stop() == 0
    assert private == dict.fromkeys(private, 0o600)
    [body] = [p for p in (data / "blobs").glob("??/*") if p.is_file()]
    assert mode(body) & 0o007 == 0  # message files: never for others
    directories = [data, data / "blobs", data / "blobs" / "tmp", body.parent, data / "tls"]
    assert {str(d): mode(d) for d in directories} == {str(d): 0o750 for d in directories}
    assert mode(data / "tls" / "cert.pem") & 0o007 == 0
    assert "security.loose_mode" not in server.log_text()
    if os.geteuid() == 0:  # no `user` in the config: it runs as root, and says so
        assert "warning security.running_as_root" in server.log_text()

    db.chmod(0o644)
    server.start()  # it warns, and serves anyway
    deliver(server, "still served")
    assert server.stop() == 0
    [warning] = [line for line in server.log_text().splitlines() if "loose_mode" in line]
    assert warning.endswith(f"warning security.loose_mode path={db} mode=0644 want=0600")
    subjects = [m["subject"] for m in server.messages("alice@example.test")]
    assert subjects == ["private", "still served"]


def serve(server: PocztaServer, *extra: str) -> subprocess.CompletedProcess[str]:
    """`poczta serve` expected to give up at start."""
    return server.cli_subprocess("serve", "-c", str(server.config), *extra, check=False)


def test_a_second_server_on_the_same_data_dir_refuses(fresh_poczta: PocztaServer) -> None:
    first = fresh_poczta.proc
    assert first is not None
    data = fresh_poczta.root / "data"
    other = PocztaServer(fresh_poczta.root / "other", {"smtp": free_port()})
    other.root.mkdir()
    other.config.write_text(
        fresh_poczta.config.read_text().replace(
            f'["127.0.0.1:{fresh_poczta.ports["smtp"]}"]', f'["127.0.0.1:{other.ports["smtp"]}"]'
        )
    )
    second = serve(other)
    assert second.returncode == 1
    assert second.stderr == f"poczta: data dir {data} is in use by poczta serve (pid {first.pid})\n"
    dev = subprocess.run(
        [*POCZTA, "dev", "--data-dir", str(data)], capture_output=True, text=True, timeout=60
    )
    assert dev.returncode == 1
    assert dev.stderr == f"poczta: data dir {data} is in use by poczta serve (pid {first.pid})\n"
    assert (data / "poczta.pid").read_text() == f"{first.pid}\n"

    fresh_poczta.kill()  # its pid file stays behind, and must not keep the next one out
    fresh_poczta.start()
    assert fresh_poczta.proc is not None
    assert (data / "poczta.pid").read_text() == f"{fresh_poczta.proc.pid}\n"
    deliver(fresh_poczta, "after a kill")


def test_start_errors_name_the_config_key(tmp_path: Path) -> None:
    server = make_server(tmp_path, services=("smtp", "submission"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.ports["submission"]))
        taken.listen()
        result = serve(server)
    port = server.ports["submission"]
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1:] == [
        f"poczta: listeners.submission: 127.0.0.1:{port}: address already in use"
    ]
    assert "Traceback" not in result.stderr

    config = server.config.read_text()
    server.config.write_text(
        config.replace(f'"127.0.0.1:{server.ports["smtp"]}"', '"no-such-host.invalid:2525"')
    )
    result = serve(server)
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith("poczta: listeners.smtp: no-such-host.invalid:2525: cannot resolve ")
    assert "Traceback" not in result.stderr

"""`poczta dev`: the embedded defaults, the printed banner, plaintext AUTH on loopback only."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import POCZTA, wait_for_port

pytestmark = pytest.mark.e2e

DEV_PORTS = {"smtp": 2525, "submission": 2587, "submissions": 2465}


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(
    any(port_busy(p) for p in DEV_PORTS.values()),
    reason="a dev poczta (or something else) already uses the dev ports",
)
def test_dev_runs_with_demo_account(tmp_path: Path) -> None:
    env = {**os.environ, "POCZTA_DEV_PASSWORD": "demo-pass-123"}
    log = (tmp_path / "dev.log").open("w+b")
    proc = subprocess.Popen(
        [*POCZTA, "dev", "--data-dir", str(tmp_path / "dev")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for name, port in DEV_PORTS.items():
            wait_for_port(port, proc, tls=name == "submissions")
        deadline = time.monotonic() + 10
        while b"Thunderbird" not in (tmp_path / "dev.log").read_bytes():
            assert time.monotonic() < deadline, "no banner printed"
            time.sleep(0.05)
        banner = (tmp_path / "dev.log").read_text()
        assert "demo@example.test" in banner and "demo-pass-123" in banner
        assert "swaks" in banner and "2587" in banner

        with smtplib.SMTP("127.0.0.1", DEV_PORTS["submission"], timeout=10) as client:
            _code, _greeting = client.ehlo("dev.test")
            assert "PLAIN" in client.esmtp_features["auth"]  # loopback, dev mode: no TLS needed
            client.login("demo@example.test", "demo-pass-123")
            client.sendmail(
                "demo@example.test",
                ["demo@example.test"],
                b"From: demo@example.test\r\nSubject: dev hello\r\n\r\nhi\r\n",
            )
        listed = subprocess.run(
            [
                *POCZTA,
                "mail",
                "list",
                "--data-dir",
                str(tmp_path / "dev"),
                "demo@example.test",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "dev hello" in listed.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0

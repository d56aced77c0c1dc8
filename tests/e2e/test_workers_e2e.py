"""Several worker processes: they share the ports, take SIGHUP, stop on SIGTERM, get restarted."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.harness import PocztaServer, make_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def workers_poczta(tmp_path: Path) -> Iterator[PocztaServer]:
    server = make_server(tmp_path, services=("smtp",), top_config="workers = 2\n")
    server.start()
    yield server
    if server.proc is not None:
        server.kill()
        for pid in started_pids(server) + committer_pids(server):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def started_pids(server: PocztaServer) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker\.started pid=(\d+)", server.log_text())]


def committer_pids(server: PocztaServer) -> list[int]:
    return [int(pid) for pid in re.findall(r"committer\.started pid=(\d+)", server.log_text())]


def listening_workers(server: PocztaServer) -> set[int]:
    return {int(p) for p in re.findall(r"listening service=smtp .*worker=(\d+)", server.log_text())}


def accepting_workers(server: PocztaServer) -> set[int]:
    return {int(p) for p in re.findall(r"smtp\.accepted .*worker=(\d+)", server.log_text())}


def accepting_lines(server: PocztaServer) -> list[str]:
    return re.findall(r"smtp\.accepted ", server.log_text())


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def send_batch(port: int, first: int, count: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for n in range(first, first + count):
            message = f"Subject: w{n}\r\nFrom: carol@elsewhere.test\r\n\r\nbody {n}\r\n"
            client.sendmail("carol@elsewhere.test", ["alice@example.test"], message)
    return count


def send_many(port: int, connections: int, per_connection: int, start: int = 0) -> int:
    with ThreadPoolExecutor(connections) as pool:
        counts = pool.map(
            lambda i: send_batch(port, start + i * per_connection, per_connection),
            range(connections),
        )
        return sum(counts)


def test_workers_share_the_port_reload_restart_and_stop(workers_poczta: PocztaServer) -> None:
    server = workers_poczta
    port = server.ports["smtp"]
    wait_until(lambda: len(listening_workers(server)) == 2)
    assert set(started_pids(server)) == listening_workers(server)

    assert send_many(port, connections=8, per_connection=5) == 40
    subjects = {m["subject"] for m in server.messages("alice@example.test")}
    assert subjects == {f"w{n}" for n in range(40)}
    # The kernel picks a worker per connection; a few more make "all on one" vanishingly rare.
    for n in range(40, 60):
        if len(accepting_workers(server)) == 2:
            break
        send_batch(port, n, 1)
    assert accepting_workers(server) == listening_workers(server)

    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: server.log_text().count("tls.reloaded") == 2)

    # The committer process stores what both workers accept; killed, it is started again
    # and meanwhile the workers store by themselves.
    [committer] = committer_pids(server)
    assert f"committer.listening committer={committer}" in server.log_text()
    os.kill(committer, signal.SIGKILL)
    wait_until(lambda: len(committer_pids(server)) == 2)
    assert f'committer.stopped pid={committer} status="signal SIGKILL"' in server.log_text()
    assert send_many(port, connections=4, per_connection=5, start=60) == 20
    wait_until(lambda: server.log_text().count("committer.listening") == 2)

    victim = started_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(started_pids(server)) == 3)
    wait_until(lambda: len(listening_workers(server)) == 3)
    assert f'worker.stopped pid={victim} status="signal SIGKILL"' in server.log_text()
    assert send_many(port, connections=4, per_connection=5, start=100) == 20
    assert len(server.messages("alice@example.test")) == len(accepting_lines(server))

    pids = started_pids(server) + committer_pids(server)
    assert server.stop() == 0
    assert not [pid for pid in pids if alive(pid)]
    log = server.log_text()
    last_committer = committer_pids(server)[-1]
    # stopped after the workers, whose last deliveries it may still be answering
    assert log.rindex("worker.stopped") < log.index(f"committer.stopped pid={last_committer}")
    assert server.log_text().count("worker.stopped pid=") == 3  # the killed one, then two
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = make_server(tmp_path, services=("smtp",), top_config="workers = 2\n")
        server.ports["smtp"] = taken.getsockname()[1]
        server.write_config()
        result = server.cli_subprocess("serve", "-c", str(server.config), check=False)
    assert result.returncode == 1
    port = server.ports["smtp"]
    assert f"poczta: listeners.smtp: 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "worker.started" not in result.stderr

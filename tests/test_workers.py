"""The master of multi-process serving: worker counts and the bind probe before forking."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from poczta.config import Config, ListenAddress, Listeners
from poczta.workers import WorkerError, probe_addresses, worker_count


def config_with(tmp_path: Path, workers: int, smtp: tuple[ListenAddress, ...] = ()) -> Config:
    listeners = Listeners(
        smtp=smtp, submission=(), submissions=(), pop3=(), pop3s=(), imap=(), imaps=()
    )
    return Config.dev(tmp_path).replace(workers=workers, listeners=listeners)


def test_worker_count(tmp_path: Path) -> None:
    assert worker_count(config_with(tmp_path, 1)) == 1
    assert worker_count(config_with(tmp_path, 3)) == 3
    assert worker_count(config_with(tmp_path, 0)) == len(os.sched_getaffinity(0))


def test_probe_accepts_a_free_port_and_names_a_taken_one(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_with(tmp_path, 2, (ListenAddress("127.0.0.1", port),))
        with pytest.raises(WorkerError, match=rf"127\.0\.0\.1:{port} \(smtp\)"):
            probe_addresses(config)
    probe_addresses(config)  # released: now it binds

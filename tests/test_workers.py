"""The master of multi-process serving: worker counts, sockets bound before forking, restarts."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from poczta.app_sockets import bind_listeners, close_sockets, take_slot
from poczta.config import Config, ListenAddress, Listeners
from poczta.process import StartError
from poczta.workers import Master, worker_count


def config_with(tmp_path: Path, workers: int, smtp: tuple[ListenAddress, ...] = ()) -> Config:
    listeners = Listeners(
        smtp=smtp, submission=(), submissions=(), pop3=(), pop3s=(), imap=(), imaps=()
    )
    return Config.dev(tmp_path).replace(workers=workers, listeners=listeners)


def test_worker_count(tmp_path: Path) -> None:
    assert worker_count(config_with(tmp_path, 1)) == 1
    assert worker_count(config_with(tmp_path, 3)) == 3
    assert worker_count(config_with(tmp_path, 0)) == len(os.sched_getaffinity(0))


def test_a_taken_port_is_named_by_its_config_key(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_with(tmp_path, 2, (ListenAddress("127.0.0.1", port),))
        with pytest.raises(StartError) as caught:
            bind_listeners(config, copies=2)
        assert caught.value.message == f"listeners.smtp: 127.0.0.1:{port}: address already in use"
    bound = bind_listeners(config, copies=2)  # released: now it binds, once per worker
    try:
        [(address, sockets)] = bound.items()
        assert address == ("smtp", ListenAddress("127.0.0.1", port))
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port)] * 2
        mine = take_slot(bound, 1)  # what a worker keeps: its copy; the other one is closed
        assert mine[address] is sockets[1] and sockets[0].fileno() == -1
    finally:
        close_sockets(bound)


def test_an_unknown_host_is_named_by_its_config_key(tmp_path: Path) -> None:
    config = config_with(tmp_path, 1, (ListenAddress("no-such-host.invalid", 2525),))
    with pytest.raises(StartError, match=r"^listeners\.smtp: no-such-host\.invalid:2525: cannot "):
        bind_listeners(config)


def test_a_committer_that_keeps_dying_is_started_again_ever_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("poczta.workers.time.monotonic", lambda: clock[0])
    master = Master(count=0, run_worker=lambda _slot: None, grace=1.0, run_committer=lambda: None)
    killed = 9  # a wait status: killed by SIGKILL
    delays: list[float] = []
    for _ in range(9):  # each dies at once: the wait doubles, up to 64 s
        master.committer, master.committer_started = 4242, clock[0]
        master._committer_ended(killed)
        assert master.committer is None and master.committer_due is not None
        delays.append(master.committer_due - clock[0])
        clock[0] = master.committer_due
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 64.0, 64.0, 64.0]
    master.committer, master.committer_started = 4242, clock[0]
    clock[0] += 60.0  # one that ran for a minute: the next start comes after a second
    master._committer_ended(killed)
    assert master.committer_due == clock[0] + 1.0
    master.stopping = True  # when stopping, no restart is planned
    master.committer, master.committer_due = 4242, None
    master._committer_ended(0)
    assert master.committer_due is None

"""Runner names and whether the runner behind one is gone (`poczta.queue.claims`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from poczta.queue.claims import RunnerName, holder_gone, runner_name, this_host


def ended_pid() -> int:
    """The pid of a process of this machine that has ended (and been waited for)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def name_of(pid: int, start: int = 1, host: str | None = None) -> str:
    """A runner name for process `pid` of this machine (or of `host`)."""
    return str(RunnerName("mx.example.test", host or this_host(), pid, start, "0a1b2c3d"))


def test_a_name_reads_back_as_it_was_made() -> None:
    name = runner_name("mx.example.test")
    parsed = RunnerName.parse(name)
    assert parsed is not None and str(parsed) == name
    assert (parsed.node, parsed.host, parsed.pid) == ("mx.example.test", this_host(), os.getpid())
    assert parsed.start == start_time(os.getpid())
    assert runner_name("mx.example.test") != name  # two runners of one process differ


def test_the_runners_of_this_process_are_not_gone() -> None:
    assert not holder_gone(runner_name("mx.example.test"))


def test_a_runner_whose_process_ended_is_gone() -> None:
    assert holder_gone(name_of(ended_pid()))


def test_a_runner_whose_process_is_a_zombie_is_gone() -> None:
    child = subprocess.Popen(["true"])
    try:
        name = name_of(child.pid, start_time(child.pid))
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert holder_gone(name)  # it ended; nobody has waited for it yet
    finally:
        child.wait()


def test_a_pid_used_again_by_a_later_process_is_not_the_runner() -> None:
    me = os.getpid()
    assert not holder_gone(name_of(me, start_time(me)))
    assert holder_gone(name_of(me, start_time(me) - 1))


def test_a_runner_of_another_machine_is_left_to_its_lease() -> None:
    assert not holder_gone(name_of(ended_pid(), host="0123456789ab"))


def test_names_of_other_forms_are_left_to_their_lease() -> None:
    pid = ended_pid()
    for name in (
        "bench-hold:0",  # what a benchmark holds back
        f"mx.example.test:{this_host()}:{pid}:0a1b2c3d",
        f"{this_host()}:{pid}.1:0a1b2c3d",
        "",
    ):
        assert RunnerName.parse(name) is None, name
        assert not holder_gone(name, "mx.example.test"), name


def test_a_name_of_the_older_form_is_gone_on_its_own_node_once_its_pid_is_free() -> None:
    old = f"mx.example.test:{ended_pid()}:0a1b2c3d"  # NODE:PID:TOKEN, before host and start
    assert RunnerName.parse(old) is None
    assert holder_gone(old, "mx.example.test")
    assert not holder_gone(old, "other.example.test")  # another node's: its lease decides
    assert not holder_gone(old)
    assert not holder_gone(f"mx.example.test:{os.getpid()}:0a1b2c3d", "mx.example.test")

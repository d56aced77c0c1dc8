"""Read deadlines with a hand-driven clock: idle, command line, data rate, session."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from poczta.net.connection import Connection
from poczta.net.deadlines import Deadline, DeadlineExpired, ReadDeadlines, ReadTimeouts
from tests.clock import Clock


def deadlines(
    idle: float = 300, command: float = 60, rate: float = 500, session: float = 3600
) -> tuple[ReadDeadlines, Clock]:
    clock = Clock()
    return ReadDeadlines(ReadTimeouts(idle, command, rate, session), clock), clock


# Where the core is after handling a read, as `ReadDeadlines.received` is told it.
PARTIAL = {"completed": False, "partial_line": True}  # inside a command line
ANSWERED = {"completed": True, "partial_line": False}  # command(s) answered, nothing left
ANSWERED_AND_PARTIAL = {"completed": True, "partial_line": True}  # "OP\r\nRSE"
DATA = {"completed": False, "partial_line": False, "in_data": True}


def step(
    reads: ReadDeadlines, clock: Clock, seconds: float, size: int, state: dict[str, bool]
) -> tuple[float, Deadline]:
    """`size` bytes arrive `seconds` later and leave the core in `state`; the next wait."""
    clock.now += seconds
    reads.received(size, **state)
    return reads.next_read()


def test_bytes_of_an_unfinished_line_do_not_move_the_idle_deadline() -> None:
    reads, clock = deadlines(idle=10, command=100)
    waits = [step(reads, clock, 1, 1, PARTIAL) for _ in range(9)]
    assert waits[-1] == (1.0, Deadline.IDLE)


def test_a_command_line_has_its_own_deadline_from_its_first_byte() -> None:
    reads, clock = deadlines(idle=300, command=60)
    assert step(reads, clock, 100, 1, PARTIAL) == (60.0, Deadline.COMMAND)
    assert step(reads, clock, 50, 1, PARTIAL) == (10.0, Deadline.COMMAND)
    assert step(reads, clock, 5, 2, ANSWERED) == (300.0, Deadline.IDLE)


def test_a_completed_command_restarts_both_clocks_when_a_new_line_follows() -> None:
    reads, clock = deadlines(idle=30, command=20)
    step(reads, clock, 15, 5, PARTIAL)
    assert step(reads, clock, 10, 9, ANSWERED_AND_PARTIAL) == (20.0, Deadline.COMMAND)


def test_a_client_that_only_sends_complete_commands_never_idles_out() -> None:
    reads, clock = deadlines(idle=10, command=5)
    waits = {step(reads, clock, 3, 6, ANSWERED) for _ in range(100)}
    assert waits == {(10.0, Deadline.IDLE)}


# The DATA command answered with 354: message data comes next.
DATA_STARTED = {"completed": True, "partial_line": False, "in_data": True}


def trickle(reads: ReadDeadlines, clock: Clock, per_second: int, seconds: int) -> float | None:
    """Feed message data each second; the time its deadline ran out, or None."""
    started = clock.now
    wait, deadline = step(reads, clock, 0, 6, DATA_STARTED)
    for _ in range(seconds):
        assert deadline is Deadline.DATA_RATE
        if wait < 1:
            return clock.now + wait - started
        wait, deadline = step(reads, clock, 1, per_second, DATA)
    return None


def test_data_above_the_minimum_rate_may_take_long() -> None:
    reads, clock = deadlines(idle=10, rate=100)
    assert trickle(reads, clock, per_second=120, seconds=1000) is None


def test_data_below_the_minimum_rate_is_cut_once_the_slack_is_used() -> None:
    reads, clock = deadlines(idle=10, rate=100)
    ended = trickle(reads, clock, per_second=50, seconds=1000)
    # The deadline starts 10 s ahead and gains 0.5 s per second: it is reached at 20 s.
    assert ended is not None and 19 <= ended <= 21


def test_fast_data_earns_no_more_slack_than_the_idle_timeout() -> None:
    reads, clock = deadlines(idle=10, rate=100)
    step(reads, clock, 0, 6, DATA_STARTED)
    assert step(reads, clock, 1, 10_000_000, DATA) == (10.0, Deadline.DATA_RATE)


def test_without_a_minimum_rate_data_only_must_not_stall() -> None:
    reads, clock = deadlines(idle=10, rate=0)
    assert trickle(reads, clock, per_second=1, seconds=1000) is None


def test_after_the_message_the_idle_clock_starts_again() -> None:
    reads, clock = deadlines(idle=10, rate=100)
    step(reads, clock, 0, 6, DATA_STARTED)
    # ".\r\n" arrives, the message is stored and answered with 250:
    assert step(reads, clock, 8, 1000, ANSWERED) == (10.0, Deadline.IDLE)


def test_the_session_deadline_caps_every_other() -> None:
    reads, clock = deadlines(idle=10, session=25)
    waits = [step(reads, clock, 3, 6, ANSWERED) for _ in range(8)]
    assert waits[-1] == (1.0, Deadline.SESSION)
    clock.now += 5
    assert reads.next_read() == (0.0, Deadline.SESSION)


class SilentConnection:
    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    async def read(self, timeout: float | None) -> bytes | None:
        self.timeouts.append(timeout)
        raise TimeoutError


def test_read_names_the_deadline_that_ran_out() -> None:
    reads, clock = deadlines(idle=300, command=60)
    step(reads, clock, 10, 3, PARTIAL)
    conn = SilentConnection()
    with pytest.raises(DeadlineExpired) as expired:
        asyncio.run(reads.read(cast(Connection, conn)))
    assert expired.value.deadline is Deadline.COMMAND
    assert conn.timeouts == [60.0]

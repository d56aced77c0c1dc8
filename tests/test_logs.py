"""Log lines: the text and JSON forms, the level threshold, other loggers on the same stream."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from poczta import logs


@pytest.fixture
def stream(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], str]]:
    """What was written to stderr (where setup_logging sends the lines)."""
    yield lambda: capsys.readouterr().err
    monkeypatch.setattr(logs, "_DIRECT", None)
    logging.getLogger("poczta").handlers.clear()


def test_text_lines(stream: Callable[[], str]) -> None:
    logs.setup_logging("info", "text")
    logs.log("smtp.accepted", id="Q1", sender="a b@example.test", size=12, empty="")
    logs.log("smtp.detail", level=logging.DEBUG, hidden=True)
    logging.getLogger("poczta.store").warning("disk %s", "slow")
    first, second = stream().splitlines()
    assert re.fullmatch(
        r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d info smtp\.accepted id=Q1 sender="a b@example\.test"'
        r' size=12 empty=""',
        first,
    )
    assert second.endswith(" warning disk slow")


def test_json_lines_carry_the_process_context(
    stream: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "_CONTEXT", {"worker": 7})
    logs.setup_logging("warning", "json")
    logs.log("smtp.accepted", id="Q1")
    logs.log("smtp.store_failed", level=logging.ERROR, id="Q2", error=OSError("full"))
    [line] = stream().splitlines()
    assert json.loads(line) == {
        "level": "error",
        "event": "smtp.store_failed",
        "id": "Q2",
        "error": "full",
        "worker": 7,
    }


HOSTILE = [
    "evil\r2026-12-01T00:00:00 info smtp.accepted id=FORGED",
    "evil\r2026-12-01T00:00:00\tinfo\tauth.ok",
    "evil\n2026-12-01T00:00:00 info auth.ok user=root",
    "a\x00b\x1b[2Jc\x7fd",
    "nel\x85ls\u2028ps\u2029vt\x0bff\x0cfs\x1c",
    "bidi\u202eoverride",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_text_values_cannot_start_a_line_or_hide_bytes(
    stream: Callable[[], str], value: str
) -> None:
    logs.setup_logging("info", "text")
    logs.log("smtp.connect", helo=value, ip="192.0.2.1")
    out = stream()
    [line] = out.splitlines()  # str.splitlines breaks at CR, NEL, U+2028 and more
    assert line.isprintable() and line.isascii()
    prefix = " info smtp.connect helo="
    assert prefix in line and line.endswith(" ip=192.0.2.1")
    quoted = line.split(prefix, 1)[1].removesuffix(" ip=192.0.2.1")
    assert json.loads(quoted) == value  # escaped, not lost


@pytest.mark.parametrize("value", HOSTILE)
def test_json_values_cannot_start_a_line(stream: Callable[[], str], value: str) -> None:
    logs.setup_logging("info", "json")
    logs.log("smtp.connect", helo=value)
    [line] = stream().splitlines()
    assert line.isprintable()
    assert json.loads(line)["helo"] == value


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, callback))

    def advance(self, seconds: float) -> None:
        """Move time on, running the timers that come due."""
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _when, callback in due:
            callback()


def limited(clock: FakeClock, lines: list[str]) -> logs.FloodLimit:
    def write(event: str, /, level: int = logging.INFO, **fields: object) -> None:
        lines.append(" ".join([event, *(f"{k}={v}" for k, v in fields.items())]))

    return logs.FloodLimit(3, 5.0, clock=clock, schedule=clock.schedule, write=write)


def refuse(limit: logs.FloodLimit, service: str, ip: str) -> None:
    limit.log("connection.refused", key=("service",), service=service, ip=ip)


def test_a_flood_is_cut_to_a_few_lines_and_one_count_after_it_ends() -> None:
    clock, lines = FakeClock(), list[str]()
    limit = limited(clock, lines)
    for n in range(1000):
        refuse(limit, "smtp", f"192.0.2.{n % 200}")
        clock.advance(0.0005)  # 2000 a second, for half a second
    refuse(limit, "pop3", "192.0.2.1")  # another kind has its own allowance
    assert lines == [
        "connection.refused service=smtp ip=192.0.2.0",
        "connection.refused service=smtp ip=192.0.2.1",
        "connection.refused service=smtp ip=192.0.2.2",
        "connection.refused service=pop3 ip=192.0.2.1",
    ]
    clock.advance(1.0)  # over for a second: the timer reports it
    assert lines[4:] == [
        "log.suppressed event=connection.refused service=smtp count=997 seconds=0.5"
    ]
    clock.advance(10.0)
    refuse(limit, "smtp", "192.0.2.9")  # a later refusal is logged again
    assert lines[5:] == ["connection.refused service=smtp ip=192.0.2.9"]
    assert not clock.timers


def test_a_long_flood_is_counted_every_few_seconds() -> None:
    clock, lines = FakeClock(), list[str]()
    limit = limited(clock, lines)
    for _ in range(12 * 100):  # 100 a second for 12 seconds
        refuse(limit, "smtp", "192.0.2.7")
        clock.advance(0.01)
    counts = [line for line in lines if line.startswith("log.suppressed")]
    assert len(counts) == 2  # after 5 and after 10 seconds, while it goes on
    assert len(lines) == 2 + 3 * 12  # and three lines of each second
    clock.advance(2.0)
    assert lines[-1].startswith("log.suppressed event=connection.refused service=smtp count=")
    total = sum(int(line.split("count=")[1].split()[0]) for line in lines if "count=" in line)
    assert total + 3 * 12 == 1200


def test_lines_under_the_rate_are_all_written() -> None:
    clock, lines = FakeClock(), list[str]()
    limit = limited(clock, lines)
    for _ in range(20):
        refuse(limit, "smtp", "192.0.2.7")
        clock.advance(0.5)  # two a second, under three
    assert len(lines) == 20 and not clock.timers


def test_lines_of_one_loop_turn_are_written_together_in_order(stream: Callable[[], str]) -> None:
    import asyncio

    logs.setup_logging("info", "text")
    seen: list[str] = []

    async def go() -> None:
        logs.log("first.line", n=1)
        logs.log("second.line", n=2)
        seen.append(stream())  # still collected: the loop's turn has not ended
        logging.getLogger("poczta.store").warning("third line")  # flushes the two first
        logs.log("fourth.line", n=4)
        await asyncio.sleep(0)  # the turn ends: written
        seen.append(stream())
        logs.log("fifth.line", n=5)  # written when the loop stops

    asyncio.run(go())
    seen.append(stream())
    assert seen[0] == ""
    events = [line.split()[2] for line in seen[1].splitlines()]
    assert events == ["first.line", "second.line", "third", "fourth.line"]
    assert seen[2].split()[2] == "fifth.line"
    logs.log("outside.loop")
    assert stream().split()[2] == "outside.loop"  # no loop: written at once

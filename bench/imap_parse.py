"""IMAP command reading and parsing cost, without I/O: `CommandReader.feed` alone.

Run: .venv/bin/python bench/imap_parse.py [--commands N] [--repeat R] [--kind K] [--profile].
For each kind of command in a fixed mix (the pipelined commands clients send most,
and an APPEND with a non-synchronising literal) it builds a stream of N commands
(default 20,000), feeds it to a fresh reader in 16 KiB chunks as TLS delivers
them, and prints the best of R runs (default 5) in commands per second and
microseconds per command, both of process CPU time (so that other load on the
machine matters less); `mix` interleaves all the kinds. `--profile` runs the mix
once under cProfile and prints the top functions by own time. A measurement, not
a test: every run checks only that each command came out as a `Command`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from _common import print_table
from poczta.imap import CommandReader
from poczta.imap.commands import Command
from poczta.imap.events import AppendData, AppendStart

CHUNK = 16 * 1024
_BODY = b"Subject: hello\r\n\r\n" + b"a line of text\r\n" * 12

Maker = Callable[[int], bytes]

KINDS: dict[str, Maker] = {
    "UID FETCH n BODY.PEEK[]": lambda i: b"f%d UID FETCH %d BODY.PEEK[]\r\n" % (i, 1000 + i),
    "UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)": lambda i: (
        b"c%d UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)\r\n" % (i, 5000 + i)
    ),
    "UID STORE n +FLAGS (\\Flagged)": lambda i: (
        b"s%d UID STORE %d +FLAGS (\\Flagged)\r\n" % (i, 1000 + i)
    ),
    "UID SEARCH UNSEEN FLAGGED": lambda i: b"u%d UID SEARCH UNSEEN FLAGGED\r\n" % i,
    "UID SEARCH SINCE .. BEFORE": lambda i: (
        b"d%d UID SEARCH SINCE 1-Feb-2024 BEFORE 1-Mar-2024\r\n" % i
    ),
    "APPEND with a literal": lambda i: (
        b"a%d APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n" % (i, len(_BODY), _BODY)
    ),
}


def _mix(i: int) -> bytes:
    makers = list(KINDS.values())
    return makers[i % len(makers)](i)


def stream(maker: Maker, count: int) -> list[bytes]:
    """`count` commands from `maker`, cut into 16 KiB chunks."""
    data = b"".join(maker(i) for i in range(count))
    return [data[start : start + CHUNK] for start in range(0, len(data), CHUNK)]


def read_all(chunks: list[bytes]) -> int:
    """Feed `chunks` to a fresh reader; return how many commands came out."""
    reader = CommandReader()
    commands = 0
    for chunk in chunks:
        for event in reader.feed(chunk):
            if isinstance(event, Command):
                commands += 1
            elif not isinstance(event, AppendStart | AppendData):
                raise SystemExit(f"unexpected event {event!r}")
    return commands


def measure(chunks: list[bytes], count: int, repeat: int) -> float:
    """The best seconds of `repeat` runs over `chunks`."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        got = read_all(chunks)
        best = min(best, time.process_time() - started)
        if got != count:
            raise SystemExit(f"{got} commands read, {count} sent")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kind", help="measure only this kind (or mix)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    count = args.commands
    if args.profile:
        chunks = stream(_mix, count)
        profile = cProfile.Profile()
        profile.runcall(read_all, chunks)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    rows = []
    for name, maker in [*KINDS.items(), ("mix", _mix)]:
        if args.kind not in (None, name):
            continue
        seconds = measure(stream(maker, count), count, args.repeat)
        rows.append([name, f"{count / seconds:,.0f}", f"{seconds / count * 1e6:.2f}"])
    print_table(["command", "commands/s", "µs/command"], rows, right=(1, 2))


if __name__ == "__main__":
    main()

"""SEARCH, SORT and THREAD cost over one mailbox of message facts, without I/O.

Run: .venv/bin/python bench/imap_search.py [N]. Builds N (default 10,000) message metas
the way delivery does (`parse_message` of generated messages), then prints the median
of five runs of each search, sort and thread, in milliseconds and microseconds per
message. BODY runs over the first 1,000 messages with their text extracted each time,
as a session without a text cache would. A measurement, not a test.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from _common import print_table
from poczta.imap.commands import SortKey
from poczta.imap.lexer import Scanner
from poczta.imap.limits import Dialect, ImapLimits
from poczta.imap.search import AndKey, parse_program
from poczta.imap.search_eval import SearchContext, evaluate
from poczta.imap.search_text import body_text
from poczta.imap.sort import sort_numbers
from poczta.imap.thread import thread_numbers
from poczta.message import parse_message
from poczta.store.base import MessageMeta

START = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = ["invoice", "meeting", "lunch", "report", "budget", "holiday", "release", "patch",
         "review", "party"]
FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "$Work"]


def make_raw(n: int, rng: random.Random) -> bytes:
    words = " ".join(rng.choice(WORDS) for _ in range(4))
    prefix = rng.choice(["", "Re: ", "Fwd: ", "[list] Re: "])
    parent = rng.randrange(1, n) if n > 1 and rng.random() < 0.6 else 0
    refs = f"References: <{parent}@bench.example>\r\n" if parent else ""
    sent = START + timedelta(minutes=n)
    return (
        f"From: User {n % 97} <user{n % 97}@example.org>\r\nTo: team@example.com\r\n"
        f"Subject: {prefix}{words}\r\nDate: {sent.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <{n}@bench.example>\r\n{refs}\r\n"
        f"Hello,\r\nplease see the {rng.choice(WORDS)} notes.\r\n" * 3
    ).encode()


def make_box(count: int) -> tuple[list[MessageMeta], list[bytes]]:
    rng = random.Random(5)
    metas, raws = [], []
    for n in range(1, count + 1):
        raw = make_raw(n, rng)
        parsed = parse_message(raw)
        flags = frozenset(flag for flag in FLAGS if rng.random() < 0.3)
        metas.append(MessageMeta(
            uid=n, modseq=n, flags=flags, internal_date=START + timedelta(minutes=n),
            size=parsed.size, digest=hashlib.sha256(raw).hexdigest(),
            header_size=parsed.header_size, sent_date=parsed.date, subject=parsed.subject,
            envelope=parsed.envelope, search_headers=parsed.search_headers))
        raws.append(raw)
    return metas, raws


def program(text: str) -> AndKey:
    return parse_program(Scanner([text.encode()], [], Dialect(), ImapLimits()), None)


def median_ms(run: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(5):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    metas, raws = make_box(count)
    context = SearchContext(START + timedelta(days=30))
    every = list(range(1, count + 1))
    since = (START + timedelta(days=2)).strftime("%d-%b-%Y")
    before = (START + timedelta(days=5)).strftime("%d-%b-%Y")
    cases: list[tuple[str, int, Callable[[], object]]] = []
    for text in ("SUBJECT budget", "UNSEEN FLAGGED", f"SINCE {since} BEFORE {before}",
                 "FROM user42", "HEADER Message-ID 999@", "OR KEYWORD $work ANSWERED"):
        criteria = program(text)
        cases.append((f"SEARCH {text}", count,
                      lambda criteria=criteria: evaluate(criteria, metas, context)))
    head = metas[:1000]
    body = program("BODY review")
    cases.append(("SEARCH BODY review (1,000)", len(head),
                  lambda: evaluate(body, head, context, lambda n: body_text(raws[n - 1]))))
    for keys in ("SUBJECT", "DATE", "FROM"):
        sort_keys = [SortKey(keys)]
        cases.append((f"SORT ({keys})", count,
                      lambda sort_keys=sort_keys: sort_numbers(sort_keys, every, metas)))
    for algorithm in ("REFERENCES", "ORDEREDSUBJECT"):
        cases.append((f"THREAD {algorithm}", count,
                      lambda algorithm=algorithm: thread_numbers(algorithm, every, metas)))
    rows = []
    for name, size, run in cases:
        elapsed, result = median_ms(run)
        found = len(result) if isinstance(result, list) else ""
        rows.append((name, size, found, f"{elapsed:.1f}", f"{elapsed * 1000 / size:.2f}"))
    print(f"{count} messages, median of 5 runs")
    print_table(["operation", "messages", "results", "ms", "µs/message"], rows,
                right=(1, 2, 3, 4))


if __name__ == "__main__":
    main()

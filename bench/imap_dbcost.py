"""What IMAP commands cost poczta's PostgreSQL (`bench/imap --db-stats`).

On the big INBOX, one command at a time (so each count is that command's alone), every
command a number of times between two snapshots of the database's counters (see
`poczta_postgres`), net of what the idle server asks meanwhile:

* LOGIN: connect, TLS, LOGIN, LOGOUT (no SELECT);
* SELECT of the big INBOX (from the selected state: a re-select);
* UID FETCH of 100 messages' headers, as a client opening a mailbox asks for a screenful
  (flags, size, the header fields a list view shows), each time the next 100;
* BODY.PEEK[] of one message; and 500 of them pipelined (`--pipeline` in flight), the
  figures of the 500 together;
* UID STORE +FLAGS of a keyword on one message (each a change);
* UID SEARCH by a subject word, and by flags (UNSEEN FLAGGED); NOOP;
* a CONDSTORE resync: ``UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)`` of a session selected
  with CONDSTORE after another changed 100 messages (the FETCH alone is counted).
* MOVE of the first 100 messages to Archive in one command (last: they stay there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from imap_client import ImapClient, response_code
from imap_scenarios import CLIENT_OPEN, Session
from mailgen import SUBJECT_WORD
from poczta_postgres import BenchPostgres, DbCost, DbUsage, background

RESYNCS = 10

HEADERS_100 = CLIENT_OPEN.replace("UID FETCH 1:*", "UID FETCH {}")
PIPELINED = 500


async def db_costs(session: Session, db: BenchPostgres) -> list[DbCost]:
    """Each operation's cost, measured on its own; the idle server's per second first."""
    idle = background(db)
    costs = [idle.per_second("idle server, per second")]
    plan = session.target.plan
    client = await session.open(plan.big_user)
    uids = sorted(session.sizes) or list(range(1, len(plan.inbox) + 1))
    window = session.opts.pipeline
    pages = [uids[i : i + 100] for i in range(0, len(uids), 100)]

    async def measure(label: str, times: int, one: Callable[[int], Awaitable[object]]) -> None:
        before = db.snapshot()
        for i in range(times):
            await one(i)
        usage = DbUsage.between(before, db.snapshot(settle=True)).net(idle)
        costs.append(usage.per(times, label))

    async def login(_: int) -> None:
        await (await session.open(plan.big_user, None)).logout()

    def command(text: Callable[[int], str]) -> Callable[[int], Awaitable[object]]:
        return lambda i: client.command(text(i))

    await measure("LOGIN + LOGOUT", 10, login)
    await measure("SELECT INBOX", 50, lambda _: client.select("INBOX"))
    await measure("UID FETCH 100 headers", 50, command(lambda i: _headers(pages[i % len(pages)])))
    await measure("UID FETCH 1 BODY.PEEK[]", 100, command(lambda i: _peek(uids, i)))
    peeks = [_peek(uids, i) for i in range(PIPELINED)]
    await measure(f"{PIPELINED} BODY.PEEK[] pipelined", 1, lambda _: client.pipeline(peeks, window))
    await measure("UID STORE 1 flag", 200, command(lambda i: _store(uids, i)))
    await measure("UID SEARCH SUBJECT", 20, command(lambda _: f"UID SEARCH SUBJECT {SUBJECT_WORD}"))
    await measure("UID SEARCH UNSEEN FLAGGED", 20, command(lambda _: "UID SEARCH UNSEEN FLAGGED"))
    await measure("NOOP", 200, command(lambda _: "NOOP"))
    costs.append(await _resync_cost(session, db, idle, client, uids))
    # Last: the first 100 messages each time, which then stay in Archive.
    await measure("MOVE 100", 5, command(lambda _: "MOVE 1:100 Archive"))
    await client.logout()
    return costs


async def _resync_cost(
    session: Session, db: BenchPostgres, idle: DbUsage, client: ImapClient, uids: list[int]
) -> DbCost:
    """CHANGEDSINCE after another session's 100 changes: the FETCH's cost alone."""
    resync = await session.open(session.target.plan.big_user, None)
    selected = await resync.select("INBOX", condstore=True)
    modseq = next(m for r in selected.untagged if (m := response_code(r, b"HIGHESTMODSEQ")))
    usages = []
    for i in range(RESYNCS):
        changed = [uids[(i * 100 + n) * 7 % len(uids)] for n in range(100)]
        stores = [f"UID STORE {u} +FLAGS.SILENT ($DbResync{i})" for u in changed]
        await client.pipeline(stores, 16)
        before = db.snapshot()
        await resync.command(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq.decode()})")
        usages.append(DbUsage.between(before, db.snapshot(settle=True)).net(idle))
    await resync.logout()
    return _summed(usages).per(RESYNCS, "CHANGEDSINCE, 100 changed")


def _summed(usages: list[DbUsage]) -> DbUsage:
    queries: dict[str, dict[str, float]] = {}
    for usage in usages:
        for query, counters in usage.queries.items():
            total = queries.setdefault(query, dict.fromkeys(counters, 0.0))
            for name, value in counters.items():
                total[name] = total.get(name, 0.0) + value
    return DbUsage(
        sum(u.seconds for u in usages),
        sum(u.cpu for u in usages),
        sum(u.wal_syncs for u in usages),
        queries,
    )


def idle_rate(db: BenchPostgres, connections: int, seconds: float = 5.0) -> DbCost:
    """What the server asks its database per second while `connections` sit in IDLE."""
    return background(db, seconds).per_second(f"{connections:,} in IDLE, per second")


def _headers(page: list[int]) -> str:
    return HEADERS_100.format(f"{page[0]}:{page[-1]}")


def _peek(uids: list[int], i: int) -> str:
    return f"UID FETCH {uids[(i * 37) % len(uids)]} BODY.PEEK[]"


def _store(uids: list[int], i: int) -> str:
    """A keyword no message has, set and then cleared: every STORE changes a message."""
    sign = "-" if (i // len(uids)) % 2 else "+"
    return f"UID STORE {uids[i % len(uids)]} {sign}FLAGS ($DbCost)"

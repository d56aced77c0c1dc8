"""The IMAP benchmark's output: the figures table with ratios, and the checks table."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from _common import MIB, print_table
from imap_scenarios import QUIET_MAX_S, QUIET_PCT, QUIET_WINDOW_S, Figures
from poczta_postgres import print_costs

POCZTAS = ("poczta", "poczta-pg")  # poczta on SQLite, on PostgreSQL
BUSY_PCT = 15.0  # host CPU% with the server idle above which the figures are suspect
CLIENT_BOUND_PCT = 80.0  # client CPU% (of one core) above which the client may be the limit

Row = tuple[str, str | None, Callable[[Figures], float], Callable[[float], str]]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def secs(seconds: float) -> str:
    return f"{seconds:,.2f}"


def whole(value: float) -> str:
    return f"{value:,.0f}"


def rows(opts: argparse.Namespace) -> list[Row]:
    """(label, scenario whose CPU is shown, value, format) per figure."""

    def median(scenario: str) -> Callable[[Figures], float]:
        return lambda f: f.median(scenario)

    def latency(q: float) -> Callable[[Figures], float]:
        def get(f: Figures) -> float:
            lat = f.latencies
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return get

    n, c, i = f"{opts.messages:,}", opts.clients, f"{opts.idle:,}"
    bodies, changes = min(opts.bodies, opts.messages), min(opts.changes, opts.messages)
    return [
        (f"LOGIN + SELECT of {n} (ms)", "login_select", median("login_select"), ms),
        (f"first-open FETCH of {n}, cold (ms)", "first_open_cold", median("first_open_cold"), ms),
        (f"first-open FETCH of {n} (ms)", "first_open", median("first_open"), ms),
        ("SEARCH SUBJECT word (ms)", "search_subject", median("search_subject"), ms),
        ("SEARCH BODY word (ms)", "search_body", median("search_body"), ms),
        ("SEARCH SINCE .. BEFORE (ms)", "search_dates", median("search_dates"), ms),
        ("SEARCH UNSEEN FLAGGED (ms)", "search_flags", median("search_flags"), ms),
        (
            "SEARCH UNSEEN FLAGGED after a change (ms)",
            "search_flags_changed",
            median("search_flags_changed"),
            ms,
        ),
        (f"BODY.PEEK[] of {bodies:,} (ms)", "bodies", median("bodies"), ms),
        (f"STORE of {changes:,} (ms)", "store", median("store"), ms),
        ("CONDSTORE resync, 100 changed (ms)", "condstore", median("condstore"), ms),
        (f"MOVE of {changes:,} (ms)", "move", median("move"), ms),
        (f"{c} clients: wall (s)", "concurrent", median("concurrent"), secs),
        (f"{c} clients: latency p50 (ms)", None, latency(0.5), ms),
        (f"{c} clients: latency p95 (ms)", None, latency(0.95), ms),
        (f"{c} clients: latency max (ms)", None, latency(1.0), ms),
        (f"{c} clients: peak RSS (MiB)", None, lambda f: f.concurrent.get("rss", 0) / MIB, whole),
        (f"{c} clients: peak PSS (MiB)", None, lambda f: f.concurrent.get("pss", 0) / MIB, whole),
        (f"{c} clients: processes", None, lambda f: f.concurrent.get("procs", 0), whole),
        (f"{i} IDLE: RSS per connection (KiB)", None, _idle("rss_per_conn", 1024), whole),
        (f"{i} IDLE: PSS per connection (KiB)", None, _idle("pss_per_conn", 1024), whole),
        (f"{i} IDLE: RSS of the tree (MiB)", None, _idle("rss_after", MIB), whole),
        (f"{i} IDLE: PSS of the tree (MiB)", None, _idle("pss_after", MIB), whole),
        (f"{i} IDLE: processes", None, _idle("procs_after", 1), whole),
        (f"{i} IDLE: time to set up (s)", None, _idle("setup_s", 1), secs),
        (f"{i} IDLE: time until the server was quiet (s)", None, _idle("quiet_s", 1), secs),
        (f"{i} IDLE, quiet: RSS per connection (KiB)", None, _idle("rss_quiet_conn", 1024), whole),
        (f"{i} IDLE, quiet: PSS per connection (KiB)", None, _idle("pss_quiet_conn", 1024), whole),
    ]


def _idle(key: str, unit: int) -> Callable[[Figures], float]:
    return lambda f: f.idle.get(key, 0.0) / unit


def report(
    results: Sequence[Figures], unavailable: dict[str, str], opts: argparse.Namespace
) -> None:
    by_name = {r.target: r for r in results}
    names = [n for n in (*POCZTAS, "dovecot") if n in opts.targets]
    compared = [n for n in POCZTAS if n in names] if "dovecot" in names else []
    headers = ["figure", *names, *(f"dovecot/{n}" for n in compared)]
    measured = [n for n in names if n in by_name]
    headers += [f"client% {n}" for n in measured] + [f"server% {n}" for n in measured]
    table: list[list[object]] = []
    client_bound = False
    for label, scenario, get, fmt in rows(opts):
        values = {n: float(get(by_name[n])) for n in measured}
        row: list[object] = [label, *(fmt(values[n]) if n in values else "n/a" for n in names)]
        for n in compared:
            both = n in values and "dovecot" in values
            row.append(_ratio(values["dovecot"], values[n]) if both else "n/a")
        for key in ("client_pct", "server_pct"):
            for n in measured:
                pct = getattr(by_name[n], key).get(scenario) if scenario else None
                mark = "*" if key == "client_pct" and (pct or 0) > CLIENT_BOUND_PCT else ""
                client_bound = client_bound or bool(mark)
                row.append("" if pct is None else f"{pct:.0f}{mark}")
        table.append(row)
    print()
    print(
        "ratio = dovecot / poczta: above 1 means poczta is faster (times) or smaller (memory);"
        " client% / server% = CPU of the benchmark client's event loop / of the server's"
        " process tree during the scenario, in % of one core"
    )
    print_table(headers, table, right=range(1, len(headers)))
    print(
        f"IDLE: measured 2 s after the last connection was idle, and again ('quiet') once the"
        f" server's tree used under {QUIET_PCT:.0f}% of a core for {QUIET_WINDOW_S:.0f} s"
        f" (at most {QUIET_MAX_S:.0f} s), the same rule for every server"
    )
    if client_bound:
        print(
            f"* the client used over {CLIENT_BOUND_PCT:.0f}% of a core: it may have been the limit"
        )
    print_checks(results, names)
    for f in results:
        print_costs(f"{f.target}: the database's cost of one operation (--db-stats)", f.db_costs)
    for name, why in unavailable.items():
        print(f"{name}: NOT AVAILABLE: {why}")
    for f in results:
        if f.busy_before_pct > BUSY_PCT:
            print(f"warning: the CPUs were {f.busy_before_pct:.0f}% busy before {f.target} ran")
        for failure in f.failures:
            print(f"FAIL {f.target}: {failure}")


def print_checks(results: Sequence[Figures], names: Sequence[str]) -> None:
    """What each server's answers contained, against what the mail says they must."""
    by_name = {r.target: r for r in results}
    checks: dict[str, int | None] = {}
    for f in results:
        for what, (_, expected) in f.counts.items():
            checks.setdefault(what, expected)
    if not checks:
        return
    table: list[list[object]] = []
    for what, expected in checks.items():
        row: list[object] = [what, "" if expected is None else f"{expected:,}"]
        for n in names:
            found = by_name[n].counts.get(what) if n in by_name else None
            ok = found is None or found[1] is None or found[0] == found[1]
            row.append("n/a" if found is None else f"{found[0]:,}" + ("" if ok else " FAIL"))
        table.append(row)
    print()
    print_table(["check (last run)", "expected", *names], table, right=range(1, 2 + len(names)))


def _ratio(dovecot: float, poczta: float) -> str:
    return f"{dovecot / poczta:.2f}" if dovecot > 0 and poczta > 0 else "n/a"

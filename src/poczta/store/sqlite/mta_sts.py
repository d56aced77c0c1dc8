"""The MTA-STS policy cache in the SQLite store (migration 0011): one row per domain.

A read on a reader connection and a writer job, as `queue` has them. Saving a
policy also drops the rows of expired ones (which are never used again), so the table
holds no more than the domains mail went to within their policies' lifetimes.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from poczta.store.base import CachedStsPolicy
from poczta.store.codec import decode_time
from poczta.store.sqlite.queue import queue_time
from poczta.store.sqlite.writer import Job, JobContext

__all__ = ["get_policy", "save_policy_job"]


def get_policy(conn: sqlite3.Connection, domain: str) -> CachedStsPolicy | None:
    row = conn.execute(
        "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies WHERE domain = ?",
        (domain.lower(),),
    ).fetchone()
    if row is None:
        return None
    return CachedStsPolicy(row[0], row[1], row[2], decode_time(row[3]), decode_time(row[4]))


def save_policy_job(policy: CachedStsPolicy, now: datetime) -> Job:
    def job(conn: sqlite3.Connection, ctx: JobContext) -> None:
        conn.execute("DELETE FROM mta_sts_policies WHERE expires < ?", (queue_time(now),))
        conn.execute(
            "INSERT OR REPLACE INTO mta_sts_policies"
            " (domain, policy_id, policy, fetched, expires) VALUES (?, ?, ?, ?, ?)",
            (
                policy.domain.lower(),
                policy.policy_id,
                policy.text,
                queue_time(policy.fetched),
                queue_time(policy.expires),
            ),
        )

    return job

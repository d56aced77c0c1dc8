"""What the PostgreSQL store keeps beside the mail: greylisting state, sending limits and
counts, and the MTA-STS policies of destination domains.

`PostgresGreylistStore` and `PostgresSendingStore` share the store's pool (every node
sees the same records) and close with it. Each call is one small transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from poczta.mailauth.greylist import GreylistTriplet, NetworkRecord, TripletRecord
from poczta.sending_limits import (
    DAY_MINUTES,
    HOUR_MINUTES,
    LIMIT_NAMES,
    LimitOverrides,
    SendingState,
    SendingUsage,
)
from poczta.store.base import CachedStsPolicy, NotFound, normalize_address
from poczta.store.postgres.access import Connection, Database

__all__ = ["PostgresGreylistStore", "PostgresSendingStore", "get_policy", "save_policy"]

_PUT_TRIPLET = (
    "INSERT INTO greylist_triplets (network, sender, recipient, first_seen, last_seen,"
    " expires, passed_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (network, sender, recipient) DO UPDATE SET first_seen = excluded.first_seen,"
    " last_seen = excluded.last_seen, expires = excluded.expires,"
    " passed_at = excluded.passed_at, attempts = excluded.attempts"
)
_PUT_NETWORK = (
    "INSERT INTO greylist_networks (network, passes, last_pass, whitelisted_until, expires)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (network) DO UPDATE"
    " SET passes = excluded.passes, last_pass = excluded.last_pass,"
    " whitelisted_until = excluded.whitelisted_until, expires = excluded.expires"
)


class PostgresGreylistStore:
    """`GreylistStore` on the store's database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_triplet(self, triplet: GreylistTriplet) -> TripletRecord | None:
        row = await self._db.read(
            lambda c: c.fetchrow(
                "SELECT first_seen, last_seen, expires, passed_at, attempts"
                " FROM greylist_triplets WHERE network = $1 AND sender = $2 AND recipient = $3",
                triplet.network,
                triplet.sender,
                triplet.recipient,
            )
        )
        return None if row is None else TripletRecord(triplet, *row)

    async def put_triplet(self, record: TripletRecord) -> None:
        t = record.triplet
        values = (t.network, t.sender, t.recipient, record.first_seen, record.last_seen)
        rest = (record.expires, record.passed_at, record.attempts)
        await self._db.write(lambda c: c.execute(_PUT_TRIPLET, *values, *rest))

    async def get_network(self, network: str) -> NetworkRecord | None:
        row = await self._db.read(
            lambda c: c.fetchrow(
                "SELECT passes, last_pass, whitelisted_until, expires FROM greylist_networks"
                " WHERE network = $1",
                network,
            )
        )
        return None if row is None else NetworkRecord(network, *row)

    async def put_network(self, record: NetworkRecord) -> None:
        values = (record.network, record.passes, record.last_pass)
        rest = (record.whitelisted_until, record.expires)
        await self._db.write(lambda c: c.execute(_PUT_NETWORK, *values, *rest))

    async def sweep(self, now: float) -> int:
        async def delete(conn: Connection) -> int:
            triplets = await conn.execute("DELETE FROM greylist_triplets WHERE expires <= $1", now)
            networks = await conn.execute("DELETE FROM greylist_networks WHERE expires <= $1", now)
            return int(triplets.rpartition(" ")[2]) + int(networks.rpartition(" ")[2])

        return await self._db.write(delete)

    async def close(self) -> None:
        """Nothing of its own to close: it uses the store's pool."""


_STATE = (
    "SELECT u.id, l.messages_per_hour, l.recipients_per_message, l.recipients_per_day,"
    " (SELECT coalesce(sum(messages), 0) FROM sending_usage"
    "   WHERE user_id = u.id AND minute > $1),"
    " (SELECT coalesce(sum(recipients), 0) FROM sending_usage"
    "   WHERE user_id = u.id AND minute > $2)"
    " FROM users u LEFT JOIN sending_limits l ON l.user_id = u.id WHERE u.address = $3"
)


class PostgresSendingStore:
    """`SendingStore` on the store's database: one row per user and minute of sending."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sending_state(self, user: str, now: float) -> SendingState:
        minute = int(now // 60)
        key = (minute - HOUR_MINUTES, minute - DAY_MINUTES, normalize_address(user))
        row = await self._db.read(lambda c: c.fetchrow(_STATE, *key))
        if row is None:
            return SendingState(LimitOverrides(), SendingUsage())
        return SendingState(LimitOverrides(*row[1:4]), SendingUsage(int(row[4]), int(row[5])))

    async def record_sent(self, user: str, recipients: int, now: float) -> None:
        minute, address = int(now // 60), normalize_address(user)

        async def count(conn: Connection) -> None:
            user_id = await conn.fetchval("SELECT id FROM users WHERE address = $1", address)
            if user_id is None:
                return
            await conn.execute(
                "INSERT INTO sending_usage (user_id, minute, messages, recipients)"
                " VALUES ($1, $2, 1, $3) ON CONFLICT (user_id, minute) DO UPDATE"
                " SET messages = sending_usage.messages + 1,"
                " recipients = sending_usage.recipients + excluded.recipients",
                user_id,
                minute,
                recipients,
            )
            await conn.execute(
                "DELETE FROM sending_usage WHERE user_id = $1 AND minute <= $2",
                user_id,
                minute - DAY_MINUTES,
            )

        await self._db.write(count)

    async def set_overrides(self, user: str, changes: Mapping[str, int | None]) -> None:
        """Set some of `user`'s own limits (None: back to the default); NotFound when there
        is no such user."""
        unknown = set(changes) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"unknown sending limits: {sorted(unknown)}")
        address = normalize_address(user)

        async def update(conn: Connection) -> None:
            user_id = await conn.fetchval(
                "SELECT id FROM users WHERE address = $1 FOR SHARE", address
            )
            if user_id is None:
                raise NotFound(f"no user {address}")
            await conn.execute(
                "INSERT INTO sending_limits (user_id) VALUES ($1) ON CONFLICT DO NOTHING", user_id
            )
            for column in LIMIT_NAMES:  # names from LIMIT_NAMES only
                if column in changes:
                    await conn.execute(
                        f"UPDATE sending_limits SET {column} = $1 WHERE user_id = $2",
                        changes[column],
                        user_id,
                    )

        await self._db.write(update)

    async def close(self) -> None:
        """Nothing of its own to close: it uses the store's pool."""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


async def get_policy(conn: Connection, domain: str) -> CachedStsPolicy | None:
    row = await conn.fetchrow(
        "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies"
        " WHERE domain = $1",
        domain.lower(),
    )
    return None if row is None else CachedStsPolicy(*row)


async def save_policy(conn: Connection, policy: CachedStsPolicy, now: datetime) -> None:
    """Keep `policy` as its domain's; drop the policies that expired before `now`."""
    await conn.execute("DELETE FROM mta_sts_policies WHERE expires < $1", _utc(now))
    await conn.execute(
        "INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched, expires)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain) DO UPDATE"
        " SET policy_id = excluded.policy_id, policy = excluded.policy,"
        " fetched = excluded.fetched, expires = excluded.expires",
        policy.domain.lower(),
        policy.policy_id,
        policy.text,
        _utc(policy.fetched),
        _utc(policy.expires),
    )

-- poczta mail store on PostgreSQL, schema version 2: the state of the limits that hold
-- across nodes (failed logins, POP3 maildrop locks, connections per client address).
--
-- These tables are UNLOGGED: none of their rows is worth a WAL flush, a commit that only
-- touches them does not wait for the disk, and after a crash of the database server they
-- start empty (every node's sessions lose their connection to it anyway). A holder is a
-- process named like a queue runner (`poczta.queue.claims`); `expires` is the end of its
-- lease, seconds since the epoch, which the live process keeps moving ahead.

-- One row per failed login within the throttle's window. `pair` is false once a login
-- from that network to that account succeeded: the failure still counts for both alone.
CREATE UNLOGGED TABLE login_failures (
    network text NOT NULL,
    account text NOT NULL,
    at      double precision NOT NULL,
    pair    boolean NOT NULL DEFAULT true
);
CREATE INDEX login_failures_network ON login_failures (network, at);
CREATE INDEX login_failures_account ON login_failures (account, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- RFC 1939: one POP3 session per maildrop, whichever node it is on.
CREATE UNLOGGED TABLE maildrop_leases (
    address text PRIMARY KEY,
    holder  text NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX maildrop_leases_holder ON maildrop_leases (holder);

-- Open connections of each client address at each process.
CREATE UNLOGGED TABLE connection_counts (
    ip      text NOT NULL,
    holder  text NOT NULL,
    count   integer NOT NULL CHECK (count >= 0),
    expires double precision NOT NULL,
    PRIMARY KEY (ip, holder)
);
CREATE INDEX connection_counts_holder ON connection_counts (holder);

-- Count one more connection of `p_ip` at `p_holder` unless the connections of that address
-- at holders whose leases last past `p_now` number `p_limit` already: true when counted.
-- The advisory lock makes the sum and the increment one step for each address, so that
-- nodes accepting at the same instant cannot both take the last place; each statement
-- of the function sees what the others committed before it.
CREATE FUNCTION open_connection(
    p_ip text, p_holder text, p_limit integer, p_now double precision, p_until double precision
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('poczta connection_counts'), hashtext(p_ip));
    IF (SELECT coalesce(sum(count), 0) FROM connection_counts
        WHERE ip = p_ip AND expires > p_now) >= p_limit THEN
        RETURN false;
    END IF;
    INSERT INTO connection_counts (ip, holder, count, expires)
    VALUES (p_ip, p_holder, 1, p_until)
    ON CONFLICT (ip, holder) DO UPDATE
    SET count = connection_counts.count + 1, expires = excluded.expires;
    RETURN true;
END
$$;

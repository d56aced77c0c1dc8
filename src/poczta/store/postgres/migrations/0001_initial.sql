-- poczta mail store on PostgreSQL, schema version 1: what the SQLite store holds after its
-- migration 12 (accounts, mailboxes, messages, the outbound queue, greylisting, sending
-- limits, quota, MTA-STS policies), plus the message bodies themselves.
--
-- Conventions:
-- * Ids are bigint identities; an identity never gives a number twice, so queue ids are
--   never reused (what SQLite needed AUTOINCREMENT for).
-- * A moment of the wall clock that the store's interface hands over as a datetime is
--   timestamptz. A time from a clock the caller injects (greylisting, sending limits, the
--   release of a body) stays the number that clock gives, seconds since the epoch, so that
--   the caller's comparisons mean what they meant: double precision, or bigint minutes.
-- * timestamptz keeps the instant, not the offset it was written with; where IMAP shows the
--   offset (INTERNALDATE, the Date header for SENTBEFORE and friends) a smallint column
--   beside it keeps the offset, in minutes east of UTC.
-- * Yes/no columns are boolean; flags are a text array; the cached parse (envelope, search
--   headers, MIME structure) is the JSON text `poczta.store.codec` writes, kept verbatim as
--   json (nothing queries into it; jsonb would only cost a conversion each way).
-- * SQLite's `unflushed_bodies` has no counterpart: bodies are rows here, committed with
--   the messages that use them. Nor has `mailboxes.subscribed`, which `subscriptions`
--   replaced.

-- UIDVALIDITY of a new mailbox: the clock in seconds, or one more than the last one given,
-- so that a mailbox made again under an old name never gets the value it had (RFC 9051
-- 2.3.1.1). One row; `next_uidvalidity()` takes its lock, so concurrent creations wait.
CREATE TABLE uidvalidity_clock (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last     bigint  NOT NULL
);
INSERT INTO uidvalidity_clock (last) VALUES (0);

CREATE FUNCTION next_uidvalidity() RETURNS bigint LANGUAGE sql AS $$
    UPDATE uidvalidity_clock
    SET last = greatest(last + 1, extract(epoch FROM clock_timestamp())::bigint)
    RETURNING last;
$$;

-- --------------------------------------------------------------------------- accounts

CREATE TABLE domains (
    name    text PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address       text NOT NULL UNIQUE,
    domain        text NOT NULL REFERENCES domains (name),
    password_hash text NOT NULL,
    scram         text NOT NULL,
    created       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_domain ON users (domain);

-- source is "local@domain" or the catch-all "@domain"; target any address.
CREATE TABLE aliases (
    source text NOT NULL,
    target text NOT NULL,
    domain text NOT NULL REFERENCES domains (name),
    PRIMARY KEY (source, target)
);
CREATE INDEX aliases_domain ON aliases (domain);

-- ---------------------------------------------------------------------- message bodies

-- One row per body, content-addressed by `digest` (SHA-256, hex) once it is complete; while
-- a body is being staged (written chunk by chunk as it arrives) its digest is NULL. `refs`
-- counts the messages and queue entries that use it. A body whose count reaches zero is
-- released, not deleted: `released` says when, and a sweep deletes it after a grace
-- period, so that a delivery of the same content that found it just before can still take
-- a reference. A staged body starts released, so an abandoned one is swept the same way.
CREATE TABLE blobs (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest   text UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    size     bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    refs     integer NOT NULL DEFAULT 0 CHECK (refs >= 0),
    released double precision  -- seconds since the epoch; NULL while referenced
);
CREATE INDEX blobs_released ON blobs (released) WHERE released IS NOT NULL;

-- A body's bytes in order, in chunks of at most 256 KiB, so that no body is ever one value
-- (a 50 MB message is read and written a chunk at a time, and TOAST keeps each chunk in
-- pieces of its own).
CREATE TABLE blob_chunks (
    blob_id bigint  NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    seq     integer NOT NULL CHECK (seq >= 0),
    data    bytea   NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 262144),
    PRIMARY KEY (blob_id, seq)
);

-- --------------------------------------------------------------------- mailboxes, messages

CREATE TABLE mailboxes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    special_use   text,
    uidvalidity   bigint NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
    uidnext       bigint NOT NULL DEFAULT 1,
    highestmodseq bigint NOT NULL DEFAULT 1,
    -- IMAP4rev1's \Recent: the first UID no session has been told of as recent yet.
    recent_uid    bigint NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);

-- IMAP subscriptions, by name: a name may be subscribed without existing (RFC 9051 6.3.7).
CREATE TABLE subscriptions (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name    text NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE messages (
    mailbox_id         bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid                bigint NOT NULL,
    modseq             bigint NOT NULL,
    flags              text[] NOT NULL DEFAULT '{}',
    internal_date      timestamptz NOT NULL,
    internal_date_zone smallint NOT NULL DEFAULT 0,  -- minutes east of UTC
    size               bigint NOT NULL CHECK (size >= 0),  -- RFC822.SIZE
    digest             text NOT NULL REFERENCES blobs (digest),
    header_size        bigint NOT NULL,
    sent_date          timestamptz,  -- the Date header, when it parses
    sent_date_zone     smallint,
    subject            text NOT NULL DEFAULT '',
    message_id         text,
    envelope           json NOT NULL,
    headers            json NOT NULL,
    structure          json,  -- NULL when the body has no MIME structure to cache
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
-- For the foreign key: a sweep deleting a body checks that no message uses it.
CREATE INDEX messages_digest ON messages (digest);

-- Expunged UIDs with the modseq of their expunge, for QRESYNC's VANISHED: the change log
-- of what is no longer there.
CREATE TABLE expunged (
    mailbox_id bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid        bigint NOT NULL,
    modseq     bigint NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);

-- ------------------------------------------------------------------------------- queue

-- An entry's `created` is its arrival time. `claimed_by` names the runner working on it
-- until `claimed_until`; a claim that has run out (its runner died) is taken again.
CREATE TABLE queue (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender        text NOT NULL,
    digest        text NOT NULL REFERENCES blobs (digest),
    size          bigint NOT NULL,
    created       timestamptz NOT NULL,
    next_attempt  timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    envid         text,
    ret           text,
    held          boolean NOT NULL DEFAULT false,
    delay_warned  boolean NOT NULL DEFAULT false,
    claimed_by    text,
    claimed_until timestamptz
);
CREATE INDEX queue_next_attempt ON queue (next_attempt);
CREATE INDEX queue_claimed_by ON queue (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX queue_digest ON queue (digest);

-- `reported`: a DSN about the recipient's final state went out (or none is wanted).
CREATE TABLE queue_recipients (
    queue_id       bigint NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
    address        text NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'delivered', 'failed')),
    last_error     text,
    attempts       integer NOT NULL DEFAULT 0,
    reply_code     smallint,
    reply_enhanced text,
    remote_mta     text,
    tls            text,
    notify         text,
    orcpt          text,
    reported       boolean NOT NULL DEFAULT false,
    last_attempt   timestamptz,
    PRIMARY KEY (queue_id, address)
);

-- ------------------------------------------------------------------------- greylisting

-- One row per (client network, envelope sender, recipient); pending while passed_at is
-- NULL. Times are the greylister's clock; `expires` is when the sweep may delete a row.
CREATE TABLE greylist_triplets (
    network    text NOT NULL,
    sender     text NOT NULL,
    recipient  text NOT NULL,
    first_seen double precision NOT NULL,
    last_seen  double precision NOT NULL,
    passed_at  double precision,
    attempts   integer NOT NULL DEFAULT 1,
    expires    double precision NOT NULL,
    PRIMARY KEY (network, sender, recipient)
);
CREATE INDEX greylist_triplets_expires ON greylist_triplets (expires);

-- One row per client network that has passed greylisting; whitelisted_until is 0 while
-- the network itself is not whitelisted.
CREATE TABLE greylist_networks (
    network           text PRIMARY KEY,
    passes            integer NOT NULL,
    last_pass         double precision NOT NULL,
    whitelisted_until double precision NOT NULL,
    expires           double precision NOT NULL
);
CREATE INDEX greylist_networks_expires ON greylist_networks (expires);

-- ------------------------------------------------------------------------ sending limits

-- A user's own limits; a NULL column keeps the configured [submission] default.
CREATE TABLE sending_limits (
    user_id                bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    messages_per_hour      integer,
    recipients_per_message integer,
    recipients_per_day     integer
);

-- What each user sent: one row per user and minute (the caller's clock in seconds // 60)
-- in which it sent mail; rows older than a day go as the user's next message is counted.
CREATE TABLE sending_usage (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    minute     bigint NOT NULL,
    messages   integer NOT NULL,
    recipients integer NOT NULL,
    PRIMARY KEY (user_id, minute)
);

-- ------------------------------------------------------------------------------- quota

-- A user's usage: the sizes (RFC822.SIZE) and the number of the messages in all of the
-- user's mailboxes, kept by the triggers below in the transaction of every change of
-- `messages`, whoever makes it.
CREATE TABLE quota_usage (
    user_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    storage  bigint NOT NULL DEFAULT 0,
    messages bigint NOT NULL DEFAULT 0
);

-- A user's own limits, in octets and messages; a NULL column keeps the [quota] default.
CREATE TABLE quota_limits (
    user_id  bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    storage  bigint,
    messages bigint
);

CREATE FUNCTION quota_user_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO quota_usage (user_id) VALUES (NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER quota_user_added AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION quota_user_added();

-- Many messages arrive or go in one statement (a delivery to several users, an EXPUNGE):
-- these triggers count a statement's rows at once, one update per user, not one per
-- message. The users' rows are locked in id order first, so that two transactions that
-- each touch several users wait for each other instead of deadlocking. Rows whose mailbox
-- is gone (deleted by a cascade from `mailboxes`, which counted them out before) find no
-- user and count for nothing. The transition table is named by TG_OP, hence EXECUTE.
CREATE FUNCTION quota_messages_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP WHEN 'INSERT' THEN 'added_messages' ELSE 'removed_messages' END;
    sign    integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    EXECUTE format(
        'SELECT 1 FROM quota_usage WHERE user_id IN'
        ' (SELECT b.user_id FROM %I c JOIN mailboxes b ON b.id = c.mailbox_id)'
        ' ORDER BY user_id FOR UPDATE', changed);
    EXECUTE format(
        'UPDATE quota_usage q'
        ' SET storage = q.storage + $1 * p.storage, messages = q.messages + $1 * p.messages'
        ' FROM (SELECT b.user_id, sum(c.size) AS storage, count(*) AS messages'
        '       FROM %I c JOIN mailboxes b ON b.id = c.mailbox_id'
        '       GROUP BY b.user_id) p'
        ' WHERE q.user_id = p.user_id', changed)
    USING sign;
    RETURN NULL;
END;
$$;
CREATE TRIGGER quota_messages_added AFTER INSERT ON messages
    REFERENCING NEW TABLE AS added_messages
    FOR EACH STATEMENT EXECUTE FUNCTION quota_messages_counted();
CREATE TRIGGER quota_messages_removed AFTER DELETE ON messages
    REFERENCING OLD TABLE AS removed_messages
    FOR EACH STATEMENT EXECUTE FUNCTION quota_messages_counted();

-- A message moved to another mailbox (MOVE keeps the row) or changed in size. Per row and
-- only when one of the two changed, so that flag changes, by far the most frequent
-- updates, cost nothing here.
CREATE FUNCTION quota_message_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quota_usage SET storage = storage - OLD.size, messages = messages - 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = OLD.mailbox_id);
    UPDATE quota_usage SET storage = storage + NEW.size, messages = messages + 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = NEW.mailbox_id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER quota_message_changed AFTER UPDATE OF mailbox_id, size ON messages
    FOR EACH ROW
    WHEN (OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id OR OLD.size IS DISTINCT FROM NEW.size)
    EXECUTE FUNCTION quota_message_changed();

-- A deleted mailbox's messages go by cascade after the mailbox row, when the triggers above
-- no longer find their user: they are counted out here, before. Not when the mailbox goes
-- because its user does: the user's usage row goes too, and updating it once more would
-- fail its foreign key (a row this transaction changed is checked again).
CREATE FUNCTION quota_mailbox_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id) THEN
        RETURN OLD;
    END IF;
    UPDATE quota_usage q
    SET storage = q.storage - m.storage, messages = q.messages - m.messages
    FROM (SELECT coalesce(sum(size), 0) AS storage, count(*) AS messages
          FROM messages WHERE mailbox_id = OLD.id) m
    WHERE q.user_id = OLD.user_id;
    RETURN OLD;
END;
$$;
CREATE TRIGGER quota_mailbox_removed BEFORE DELETE ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION quota_mailbox_removed();

-- ---------------------------------------------------------------------------- MTA-STS

-- The MTA-STS policies of destination domains (RFC 8461 5.1), kept so that a restart
-- neither forgets a policy in force nor fetches every one again. `policy_id` is the id of
-- the domain's _mta-sts TXT record when `policy` (the text as served) was fetched; it is
-- used until `expires` (the fetch plus its max_age).
CREATE TABLE mta_sts_policies (
    domain    text PRIMARY KEY,
    policy_id text NOT NULL,
    policy    text NOT NULL,
    fetched   timestamptz NOT NULL,
    expires   timestamptz NOT NULL
);

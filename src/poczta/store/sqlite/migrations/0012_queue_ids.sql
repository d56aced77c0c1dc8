-- poczta mail store: queue ids are never used twice. A queue id is in the logs, in DSNs
-- and in `poczta queue show`; with a plain rowid a new entry took the id of the last one
-- delivered once the queue was empty. AUTOINCREMENT keeps the highest id ever given in
-- sqlite_sequence. SQLite cannot add it to a table, so both queue tables are rebuilt,
-- every entry keeping its id. The old tables are renamed first (SQLite then points the
-- recipients' reference at the renamed queue), so dropping them, recipients first,
-- cascades into nothing of the new ones.
ALTER TABLE queue_recipients RENAME TO queue_recipients_0012;
ALTER TABLE queue RENAME TO queue_0012;

CREATE TABLE queue (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sender        TEXT NOT NULL,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    size          INTEGER NOT NULL,
    created       TEXT NOT NULL,
    next_attempt  TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    envid         TEXT,
    ret           TEXT,
    held          INTEGER NOT NULL DEFAULT 0,
    delay_warned  INTEGER NOT NULL DEFAULT 0,
    claimed_by    TEXT,
    claimed_until TEXT
);

CREATE TABLE queue_recipients (
    queue_id       INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    address        TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending',
    last_error     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    reply_code     INTEGER,
    reply_enhanced TEXT,
    remote_mta     TEXT,
    tls            TEXT,
    notify         TEXT,
    orcpt          TEXT,
    reported       INTEGER NOT NULL DEFAULT 0,
    last_attempt   TEXT,
    PRIMARY KEY (queue_id, address)
);

INSERT INTO queue (id, sender, digest, size, created, next_attempt, attempts, last_error,
                   envid, ret, held, delay_warned, claimed_by, claimed_until)
SELECT id, sender, digest, size, created, next_attempt, attempts, last_error,
       envid, ret, held, delay_warned, claimed_by, claimed_until
FROM queue_0012;

INSERT INTO queue_recipients (queue_id, address, status, last_error, attempts, reply_code,
                              reply_enhanced, remote_mta, tls, notify, orcpt, reported,
                              last_attempt)
SELECT queue_id, address, status, last_error, attempts, reply_code,
       reply_enhanced, remote_mta, tls, notify, orcpt, reported, last_attempt
FROM queue_recipients_0012;

DROP TABLE queue_recipients_0012;
DROP TABLE queue_0012;

CREATE INDEX queue_next_attempt ON queue(next_attempt);
CREATE INDEX queue_claimed_by ON queue(claimed_by) WHERE claimed_by IS NOT NULL;

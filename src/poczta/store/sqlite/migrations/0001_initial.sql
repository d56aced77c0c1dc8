-- poczta mail store, schema version 1: accounts, mailboxes, messages, blobs, outbound queue.
-- Times are ISO 8601 text (UTC unless a message's own offset matters); flags are
-- space-separated; envelope and search headers are JSON.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE domains (
    name    TEXT PRIMARY KEY,
    created TEXT NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE,
    domain        TEXT NOT NULL REFERENCES domains(name),
    password_hash TEXT NOT NULL,
    scram         TEXT NOT NULL,
    created       TEXT NOT NULL
);
CREATE INDEX users_domain ON users(domain);

-- source is "local@domain" or the catch-all "@domain"; target any address.
CREATE TABLE aliases (
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    domain TEXT NOT NULL REFERENCES domains(name),
    PRIMARY KEY (source, target)
);
CREATE INDEX aliases_domain ON aliases(domain);

CREATE TABLE mailboxes (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    special_use   TEXT,
    uidvalidity   INTEGER NOT NULL,
    uidnext       INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    subscribed    INTEGER NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);

-- One row per stored body; refs counts messages and queue entries that use it.
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size   INTEGER NOT NULL,
    refs   INTEGER NOT NULL
);

CREATE TABLE messages (
    mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',
    internal_date TEXT NOT NULL,
    size          INTEGER NOT NULL,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    header_size   INTEGER NOT NULL,
    sent_date     TEXT,
    subject       TEXT NOT NULL DEFAULT '',
    message_id    TEXT,
    envelope      TEXT NOT NULL,
    headers       TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);

-- Expunged UIDs with the modseq of their expunge, for QRESYNC VANISHED.
CREATE TABLE expunged (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        INTEGER NOT NULL,
    modseq     INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, uid)
);

CREATE TABLE queue (
    id           INTEGER PRIMARY KEY,
    sender       TEXT NOT NULL,
    digest       TEXT NOT NULL REFERENCES blobs(digest),
    size         INTEGER NOT NULL,
    created      TEXT NOT NULL,
    next_attempt TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX queue_next_attempt ON queue(next_attempt);

CREATE TABLE queue_recipients (
    queue_id   INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,
    address    TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    PRIMARY KEY (queue_id, address)
);

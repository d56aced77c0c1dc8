-- poczta mail store, schema version 5: IMAP subscriptions (SUBSCRIBE, LSUB, LIST
-- (SUBSCRIBED)). A name may be subscribed without existing (RFC 9051 §6.3.7); the
-- default mailboxes are subscribed when a user is created.
CREATE TABLE subscriptions (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
INSERT INTO subscriptions (user_id, name) SELECT user_id, name FROM mailboxes;

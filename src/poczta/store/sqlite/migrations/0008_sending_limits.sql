-- poczta mail store, schema version 8: sending limits of submitted mail.

-- A user's own limits; a NULL column keeps the configured [submission] default.
CREATE TABLE sending_limits (
    user_id                INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    messages_per_hour      INTEGER,
    recipients_per_message INTEGER,
    recipients_per_day     INTEGER
);

-- What each user sent: one row per user and minute (seconds since the epoch // 60) in
-- which it sent mail, with the messages and their recipients; rows older than a day go
-- as the user's next message is counted.
CREATE TABLE sending_usage (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    minute     INTEGER NOT NULL,
    messages   INTEGER NOT NULL,
    recipients INTEGER NOT NULL,
    PRIMARY KEY (user_id, minute)
) WITHOUT ROWID;

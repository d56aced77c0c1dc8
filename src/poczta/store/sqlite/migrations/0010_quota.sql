-- poczta mail store: what each user's messages take (IMAP QUOTA, delivery refusals) and
-- their own quota limits.

-- A user's usage: the sizes (RFC822.SIZE) and the number of the messages in all of the
-- user's mailboxes. The triggers below keep it in the transaction of every change of
-- `messages`, whichever job or process makes it; this migration counts what is there.
CREATE TABLE quota_usage (
    user_id  INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    storage  INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0
);

-- A user's own limits, in octets and messages; a NULL column keeps the [quota] default.
CREATE TABLE quota_limits (
    user_id  INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    storage  INTEGER,
    messages INTEGER
);

INSERT INTO quota_usage (user_id, storage, messages)
    SELECT u.id, coalesce(sum(m.size), 0), count(m.size)
    FROM users u
    LEFT JOIN mailboxes b ON b.user_id = u.id
    LEFT JOIN messages m ON m.mailbox_id = b.id
    GROUP BY u.id;

CREATE TRIGGER quota_user_added AFTER INSERT ON users BEGIN
    INSERT INTO quota_usage (user_id) VALUES (NEW.id);
END;

CREATE TRIGGER quota_message_added AFTER INSERT ON messages BEGIN
    UPDATE quota_usage SET storage = storage + NEW.size, messages = messages + 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;

CREATE TRIGGER quota_message_removed AFTER DELETE ON messages BEGIN
    UPDATE quota_usage SET storage = storage - OLD.size, messages = messages - 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = OLD.mailbox_id);
END;

CREATE TRIGGER quota_message_changed AFTER UPDATE OF mailbox_id, size ON messages BEGIN
    UPDATE quota_usage SET storage = storage - OLD.size, messages = messages - 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = OLD.mailbox_id);
    UPDATE quota_usage SET storage = storage + NEW.size, messages = messages + 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;

-- A deleted mailbox's messages go by cascade after the mailbox row, when the trigger
-- above no longer finds their user: they are counted out here, before.
CREATE TRIGGER quota_mailbox_removed BEFORE DELETE ON mailboxes BEGIN
    UPDATE quota_usage
    SET storage = storage
            - (SELECT coalesce(sum(size), 0) FROM messages WHERE mailbox_id = OLD.id),
        messages = messages - (SELECT count(*) FROM messages WHERE mailbox_id = OLD.id)
    WHERE user_id = OLD.user_id;
END;

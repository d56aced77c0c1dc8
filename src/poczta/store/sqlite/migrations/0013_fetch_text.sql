-- poczta mail store, schema version 13: FETCH's ENVELOPE and BODYSTRUCTURE as sent, each
-- mailbox's message count, and the index VANISHED reads.
-- `imap_envelope` and `imap_bodystructure` are the wire text `poczta.imap.fetch_cache`
-- makes of the cached envelope and structure when a message is stored, so that a
-- client's first FETCH of a mailbox sends text instead of building it per message.
-- Rows stored before this version start NULL; the store fills theirs from the cached
-- envelope and structure when it next opens (see `poczta.store.sqlite.backfill`).
-- `mailboxes.messages` is kept by the triggers (a MOVE moves rows), so that a mailbox's version (read
-- for every IMAP command that finds the database changed, and by the change poller)
-- costs one row instead of a count of the mailbox's messages.
-- `expunged_modseq`: the UIDs expunged since a MODSEQ without reading every expunge of
-- the mailbox.

ALTER TABLE messages ADD COLUMN imap_envelope TEXT;
ALTER TABLE messages ADD COLUMN imap_bodystructure TEXT;

ALTER TABLE mailboxes ADD COLUMN messages INTEGER NOT NULL DEFAULT 0;
UPDATE mailboxes SET messages = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id);
CREATE TRIGGER messages_counted AFTER INSERT ON messages BEGIN
    UPDATE mailboxes SET messages = messages + 1 WHERE id = NEW.mailbox_id;
END;
CREATE TRIGGER messages_uncounted AFTER DELETE ON messages BEGIN
    UPDATE mailboxes SET messages = messages - 1 WHERE id = OLD.mailbox_id;
END;
CREATE TRIGGER messages_moved AFTER UPDATE OF mailbox_id ON messages
WHEN NEW.mailbox_id != OLD.mailbox_id BEGIN
    UPDATE mailboxes SET messages = messages - 1 WHERE id = OLD.mailbox_id;
    UPDATE mailboxes SET messages = messages + 1 WHERE id = NEW.mailbox_id;
END;

CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);

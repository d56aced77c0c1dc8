-- poczta mail store on PostgreSQL, schema version 3: FETCH's ENVELOPE and BODYSTRUCTURE
-- as sent, kept with each message (as the SQLite store's version 13 does), so that a
-- client's first FETCH of a mailbox sends text instead of building it per message.
-- Rows stored before this version keep NULL there, and FETCH builds theirs from the
-- cached envelope and structure as before.

ALTER TABLE messages ADD COLUMN imap_envelope text;
ALTER TABLE messages ADD COLUMN imap_bodystructure text;

-- Each mailbox's message count, kept by the triggers below, so that a mailbox's state
-- (read for every IMAP command, to see whether it changed) costs one row instead of a
-- count of its messages. A MOVE copies rows and deletes the originals, so inserts and
-- deletes are all there is to count. Per statement, one update per mailbox; the
-- mailboxes a statement adds to or removes from are already locked by it (UIDs and
-- MODSEQs come from their rows), so this takes no new lock.
ALTER TABLE mailboxes ADD COLUMN messages bigint NOT NULL DEFAULT 0;
UPDATE mailboxes SET messages = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id);

CREATE FUNCTION mailbox_messages_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP WHEN 'INSERT' THEN 'added_messages' ELSE 'removed_messages' END;
    sign    integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    EXECUTE format(
        'UPDATE mailboxes b SET messages = b.messages + $1 * c.messages'
        ' FROM (SELECT mailbox_id, count(*) AS messages FROM %I GROUP BY mailbox_id) c'
        ' WHERE b.id = c.mailbox_id', changed)
    USING sign;
    RETURN NULL;
END;
$$;
CREATE TRIGGER mailbox_messages_added AFTER INSERT ON messages
    REFERENCING NEW TABLE AS added_messages
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_messages_counted();
CREATE TRIGGER mailbox_messages_removed AFTER DELETE ON messages
    REFERENCING OLD TABLE AS removed_messages
    FOR EACH STATEMENT EXECUTE FUNCTION mailbox_messages_counted();

-- A row moved by an UPDATE (nothing in poczta does so today): counted per row.
CREATE FUNCTION mailbox_message_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailboxes SET messages = messages - 1 WHERE id = OLD.mailbox_id;
    UPDATE mailboxes SET messages = messages + 1 WHERE id = NEW.mailbox_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER mailbox_message_moved AFTER UPDATE OF mailbox_id ON messages
    FOR EACH ROW WHEN (OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id)
    EXECUTE FUNCTION mailbox_message_moved();

-- poczta mail store on PostgreSQL, schema version 6: a MOVE changes the place of its rows
-- (mailbox, UID, MODSEQ) with one UPDATE instead of copying every row and deleting the
-- originals, which wrote each row twice, checked each body's foreign key again and ran
-- the counting triggers of both statements for a usage that does not change.
--
-- The per-row triggers that count a row an UPDATE moves to another mailbox would then
-- update both mailboxes' rows and the user's usage for every message moved. A MOVE stays
-- within one user's mailboxes, so the usage stays as it is, and it counts the two
-- mailboxes' messages itself, in one statement before its UPDATE: that statement also
-- sets the transaction-local `poczta.counted_move`, and the triggers leave alone the
-- rows moved while it is on. Any other UPDATE of a row's mailbox is still counted here.

DROP TRIGGER quota_message_changed ON messages;
CREATE TRIGGER quota_message_changed AFTER UPDATE OF mailbox_id, size ON messages
    FOR EACH ROW
    WHEN ((OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id
           AND current_setting('poczta.counted_move', true) IS DISTINCT FROM 'on')
          OR OLD.size IS DISTINCT FROM NEW.size)
    EXECUTE FUNCTION quota_message_changed();

DROP TRIGGER mailbox_message_moved ON messages;
CREATE TRIGGER mailbox_message_moved AFTER UPDATE OF mailbox_id ON messages
    FOR EACH ROW
    WHEN (OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id
          AND current_setting('poczta.counted_move', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION mailbox_message_moved();

-- The expunged UIDs of a mailbox go with it by a trigger instead of a foreign key: a
-- mailbox's id is never given again, and every writer of `expunged` has locked (and so
-- found) the mailbox's row first, while the key cost a lookup of the mailbox for every
-- UID an EXPUNGE or a MOVE records.
ALTER TABLE expunged DROP CONSTRAINT expunged_mailbox_id_fkey;

CREATE FUNCTION expunged_mailbox_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM expunged WHERE mailbox_id = OLD.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER expunged_mailbox_removed AFTER DELETE ON mailboxes
    FOR EACH ROW EXECUTE FUNCTION expunged_mailbox_removed();

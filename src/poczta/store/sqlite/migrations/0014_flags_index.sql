-- poczta mail store, schema version 14: the flags of a mailbox read from an index, and
-- a MOVE within one user's mailboxes leaves the quota alone.
-- `messages_modseq` now holds each message's UID and flags beside its MODSEQ, so that
-- what IMAP reads of a mailbox's messages most (every message's UID, flags and MODSEQ
-- at SELECT, those changed since a MODSEQ before each command) comes from the index
-- alone: a 10,000-message SELECT reads about a hundred index pages instead of every
-- message's row (some 4,000 pages of headers and envelopes).
-- `quota_message_changed` fired for every moved row and changed the user's usage twice
-- (out and back in); a row that stays with its user and keeps its size now skips it.

DROP INDEX messages_modseq;
CREATE INDEX messages_modseq ON messages(mailbox_id, modseq, uid, flags);

DROP TRIGGER quota_message_changed;
CREATE TRIGGER quota_message_changed AFTER UPDATE OF mailbox_id, size ON messages
WHEN NEW.size != OLD.size
    OR (SELECT user_id FROM mailboxes WHERE id = NEW.mailbox_id)
       IS NOT (SELECT user_id FROM mailboxes WHERE id = OLD.mailbox_id)
BEGIN
    UPDATE quota_usage SET storage = storage - OLD.size, messages = messages - 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = OLD.mailbox_id);
    UPDATE quota_usage SET storage = storage + NEW.size, messages = messages + 1
    WHERE user_id = (SELECT user_id FROM mailboxes WHERE id = NEW.mailbox_id);
END;

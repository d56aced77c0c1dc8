-- poczta mail store on PostgreSQL, schema version 5: the index by MODSEQ holds each
-- message's UID and flags too, as the SQLite store's does, so that what a session reads
-- of every message to open a mailbox (UID, flags, MODSEQ) and what it reads of the
-- messages changed since a MODSEQ are answered from the index alone: for a 10,000-message
-- INBOX about a hundred index pages instead of every page of the table, whose rows carry
-- the cached parse.
--
-- Flags are small; a message whose flags would not fit an index entry (a few kilobytes of
-- keywords) cannot be stored, as with any indexed value of that size.

CREATE INDEX messages_modseq_covering ON messages (mailbox_id, modseq) INCLUDE (uid, flags);
DROP INDEX messages_modseq;
ALTER INDEX messages_modseq_covering RENAME TO messages_modseq;

-- poczta mail store on PostgreSQL, schema version 3: FETCH's ENVELOPE and BODYSTRUCTURE
-- as sent, kept with each message (as the SQLite store's version 13 does), so that a
-- client's first FETCH of a mailbox sends text instead of building it per message.
-- Rows stored before this version keep NULL there, and FETCH builds theirs from the
-- cached envelope and structure as before.

ALTER TABLE messages ADD COLUMN imap_envelope text;
ALTER TABLE messages ADD COLUMN imap_bodystructure text;

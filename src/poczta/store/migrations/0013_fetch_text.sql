-- poczta mail store, schema version 13: FETCH's ENVELOPE and BODYSTRUCTURE as sent, and
-- the index VANISHED reads.
-- `imap_envelope` and `imap_bodystructure` are the wire text `poczta.imap.fetch_cache`
-- makes of the cached envelope and structure when a message is stored, so that a
-- client's first FETCH of a mailbox sends text instead of building it per message.
-- Rows stored before this version start NULL; the store fills theirs from the cached
-- envelope and structure when it next opens (see `poczta.store.sqlite_backfill`).
-- `expunged_modseq`: the UIDs expunged since a MODSEQ without reading every expunge of
-- the mailbox.

ALTER TABLE messages ADD COLUMN imap_envelope TEXT;
ALTER TABLE messages ADD COLUMN imap_bodystructure TEXT;
CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);

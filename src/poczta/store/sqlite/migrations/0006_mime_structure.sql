-- poczta mail store, schema version 6: the cached MIME structure of each message.
-- JSON written by `poczta.store.codec.encode_structure`: the parts with their fields
-- and byte offsets, for IMAP BODYSTRUCTURE and BODY[section] without re-parsing.
-- Rows stored before this version start NULL; the store computes theirs from their
-- bodies when it next opens (see `poczta.store.sqlite.backfill`).

ALTER TABLE messages ADD COLUMN structure TEXT;

-- poczta mail store, schema version 7: IMAP4rev1's \Recent. `recent_uid` is the first UID
-- no session has been told of as recent yet; a SELECT (and a session told of new mail)
-- moves it on, so each message is \Recent in exactly one session. Messages stored
-- before this version are not recent.
ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 1;
UPDATE mailboxes SET recent_uid = uidnext;

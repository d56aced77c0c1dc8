-- poczta mail store, schema version 4: a body whose last reference goes is released, not
-- deleted at once. `released` is when its count reached zero (NULL while it is referenced);
-- a sweep deletes the row and the file once a grace period has passed, so a delivery of the
-- same content that found the file just before can still take a reference to it.
ALTER TABLE blobs ADD COLUMN released REAL;
CREATE INDEX blobs_released ON blobs(released) WHERE released IS NOT NULL;

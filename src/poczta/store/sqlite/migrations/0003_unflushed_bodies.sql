-- poczta mail store, schema version 3: bodies whose rows were committed before a flush.
-- With the "filesystem" sync method a batch's bodies, names and rows reach the disk in
-- one flush after the commit. Until the writer sees that flush done, the batch's new
-- bodies are listed here; a store opening after a crash checks each listed body and
-- removes the rows of any that did not make it (their senders were never answered).

CREATE TABLE unflushed_bodies (
    batch  INTEGER NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX unflushed_bodies_batch ON unflushed_bodies(batch);

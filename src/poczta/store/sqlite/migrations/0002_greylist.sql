-- poczta mail store, schema version 2: greylisting state.
-- Times are seconds since the epoch (REAL), compared with the greylister's clock;
-- `expires` is when a row may be deleted by the periodic sweep.

-- One row per (client network, envelope sender, recipient); pending while passed_at is NULL.
CREATE TABLE greylist_triplets (
    network    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    passed_at  REAL,
    attempts   INTEGER NOT NULL DEFAULT 1,
    expires    REAL NOT NULL,
    PRIMARY KEY (network, sender, recipient)
) WITHOUT ROWID;
CREATE INDEX greylist_triplets_expires ON greylist_triplets(expires);

-- One row per client network that has passed greylisting; whitelisted_until is 0 when
-- the network itself is not (yet) whitelisted.
CREATE TABLE greylist_networks (
    network           TEXT PRIMARY KEY,
    passes            INTEGER NOT NULL,
    last_pass         REAL NOT NULL,
    whitelisted_until REAL NOT NULL,
    expires           REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX greylist_networks_expires ON greylist_networks(expires);

-- poczta mail store: the MTA-STS policies of destination domains (RFC 8461 5.1), kept
-- so that a restart neither forgets a policy in force nor fetches every one again.
-- `policy_id` is the id of the domain's _mta-sts TXT record when `policy` (the text
-- as served) was fetched; it is used until `expires` (the fetch plus its max_age).
-- Times are ISO 8601 text in UTC with microseconds, so that they compare as text.
CREATE TABLE mta_sts_policies (
    domain    TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy    TEXT NOT NULL,
    fetched   TEXT NOT NULL,
    expires   TEXT NOT NULL
) WITHOUT ROWID;

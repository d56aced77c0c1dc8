-- poczta mail store: what the queue runner needs to deliver, retry and report.
-- An entry's `created` is its arrival time. `claimed_by` names the runner working on it
-- until `claimed_until`; a claim that has run out (its runner died) is taken again.
-- A recipient's `status` is 'pending', 'delivered' or 'failed'; `reported` says a DSN
-- about its final state went out (or none is wanted). Times are ISO 8601 text in UTC
-- with microseconds, so that they compare as text.
ALTER TABLE queue ADD COLUMN envid TEXT;
ALTER TABLE queue ADD COLUMN ret TEXT;
ALTER TABLE queue ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN claimed_by TEXT;
ALTER TABLE queue ADD COLUMN claimed_until TEXT;
CREATE INDEX queue_claimed_by ON queue(claimed_by) WHERE claimed_by IS NOT NULL;

ALTER TABLE queue_recipients ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_recipients ADD COLUMN reply_code INTEGER;
ALTER TABLE queue_recipients ADD COLUMN reply_enhanced TEXT;
ALTER TABLE queue_recipients ADD COLUMN remote_mta TEXT;
ALTER TABLE queue_recipients ADD COLUMN tls TEXT;
ALTER TABLE queue_recipients ADD COLUMN notify TEXT;
ALTER TABLE queue_recipients ADD COLUMN orcpt TEXT;
ALTER TABLE queue_recipients ADD COLUMN reported INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_recipients ADD COLUMN last_attempt TEXT;

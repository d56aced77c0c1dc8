-- poczta mail store on PostgreSQL, schema version 4: the statement-level triggers that
-- count messages per user (0001) and per mailbox (0003) in static SQL. Their EXECUTE of
-- a statement named by TG_OP was parsed and planned anew on every statement that adds or
-- removes messages, a third of a delivery's time in the database; a static statement is
-- planned once per session. Each branch names its own transition table and is planned
-- only when it runs, so the branch of the other operation never meets a table that this
-- trigger lacks. What they count, and in which order they lock, is unchanged.

CREATE OR REPLACE FUNCTION quota_messages_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM quota_usage WHERE user_id IN
            (SELECT b.user_id FROM added_messages c JOIN mailboxes b ON b.id = c.mailbox_id)
            ORDER BY user_id FOR UPDATE;
        UPDATE quota_usage q
        SET storage = q.storage + p.storage, messages = q.messages + p.messages
        FROM (SELECT b.user_id, sum(c.size) AS storage, count(*) AS messages
              FROM added_messages c JOIN mailboxes b ON b.id = c.mailbox_id
              GROUP BY b.user_id) p
        WHERE q.user_id = p.user_id;
    ELSE
        PERFORM 1 FROM quota_usage WHERE user_id IN
            (SELECT b.user_id FROM removed_messages c JOIN mailboxes b ON b.id = c.mailbox_id)
            ORDER BY user_id FOR UPDATE;
        UPDATE quota_usage q
        SET storage = q.storage - p.storage, messages = q.messages - p.messages
        FROM (SELECT b.user_id, sum(c.size) AS storage, count(*) AS messages
              FROM removed_messages c JOIN mailboxes b ON b.id = c.mailbox_id
              GROUP BY b.user_id) p
        WHERE q.user_id = p.user_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION mailbox_messages_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE mailboxes b SET messages = b.messages + c.messages
        FROM (SELECT mailbox_id, count(*) AS messages FROM added_messages
              GROUP BY mailbox_id) c
        WHERE b.id = c.mailbox_id;
    ELSE
        UPDATE mailboxes b SET messages = b.messages - c.messages
        FROM (SELECT mailbox_id, count(*) AS messages FROM removed_messages
              GROUP BY mailbox_id) c
        WHERE b.id = c.mailbox_id;
    END IF;
    RETURN NULL;
END;
$$;

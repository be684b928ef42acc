-- Retention (`triggers purge`): the operator's record of what was removed,
-- and the one way events may be deleted.
--
-- Each purged session gets a row here, inserted with `in_progress` set in the
-- same transaction that deletes its events, then cleared before it commits
-- (no other transaction ever sees it set). The append-only guard on `events`
-- lets a row be deleted only while its session has such a row in progress;
-- updates stay refused.

CREATE TABLE purges (
    id              BIGSERIAL   PRIMARY KEY,
    session         TEXT COLLATE "C" NOT NULL,
    events          BIGINT      NOT NULL,
    last_event_at   TIMESTAMPTZ NOT NULL,
    resolved_before TIMESTAMPTZ NOT NULL,
    purged_at       TIMESTAMPTZ NOT NULL,
    purged_by       TEXT        NOT NULL,
    in_progress     BOOLEAN     NOT NULL DEFAULT FALSE
);

CREATE INDEX purges_in_progress ON purges (session) WHERE in_progress;

CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM purges WHERE session = OLD.session AND in_progress
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events are append-only (% refused; only a purge removes events)', TG_OP;
END;
$$;

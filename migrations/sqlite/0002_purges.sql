-- Retention (`triggers purge`): the operator's record of what was removed,
-- and the one way events may be deleted.
--
-- Each purged session gets a row here, inserted with `in_progress = 1` in the
-- same transaction that deletes its events, then cleared before it commits.
-- The delete guard on `events` lets a row go only while its session has such
-- a row in progress, so nothing else (no stray DELETE) can remove an event.

CREATE TABLE purges (
    id              INTEGER PRIMARY KEY,
    session         TEXT    NOT NULL,
    events          INTEGER NOT NULL,
    last_event_at   TEXT    NOT NULL,
    resolved_before TEXT    NOT NULL,
    purged_at       TEXT    NOT NULL,
    purged_by       TEXT    NOT NULL,
    in_progress     INTEGER NOT NULL DEFAULT 0 CHECK (in_progress IN (0, 1))
);

CREATE INDEX purges_in_progress ON purges (session) WHERE in_progress = 1;

DROP TRIGGER events_no_delete;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN NOT EXISTS (SELECT 1 FROM purges WHERE session = OLD.session AND in_progress = 1)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only (only a purge removes them)');
END;

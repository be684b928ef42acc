-- The initial schema (PostgreSQL). Never edit a migration once it has been
-- applied: add a new numbered file instead.
--
-- Timestamps are TIMESTAMPTZ (microsecond precision, like the engine's clock).
-- JSON is TEXT, not JSONB: the log keeps exactly the bytes written, key order
-- included. Names that are sorted on use COLLATE "C" so that listings order by
-- code point, the same as on SQLite, and their indexes stay cheap.

-- The log: one row per event, append-only. The primary key on (session, seq)
-- is the backstop of optimistic concurrency: two writers can never both append
-- the same seq. `data` is the payload without its `kind`; `format` is its
-- version (older formats are upcast on read, rows are never rewritten).
-- `instance` and `trigger_name` are copied out of the payload for lookups.
CREATE TABLE events (
    session      TEXT COLLATE "C" NOT NULL,
    seq          BIGINT      NOT NULL,
    kind         TEXT        NOT NULL,
    format       INTEGER     NOT NULL,
    data         TEXT        NOT NULL,
    caused_by    BIGINT,
    instance     TEXT COLLATE "C",
    trigger_name TEXT,
    at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session, seq)
);

-- An instance's history (`instance_events`).
CREATE INDEX events_by_instance ON events (session, instance, seq);

-- Events are facts: refuse to change or remove them.
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- One row per session: its version (the seq of its last event) is the
-- optimistic-concurrency guard every commit checks and advances first.
CREATE TABLE sessions (
    uid        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version    BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Projection: one row per instance, for listings across sessions. `body` is
-- the whole serialised instance; the other columns are what listings filter
-- and order on.
CREATE TABLE instances (
    session     TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    task        TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN (
                    'unstarted', 'scheduled', 'running', 'finished',
                    'failed', 'skipped', 'replayed', 'abandoned')),
    created_seq BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    body        TEXT        NOT NULL,
    PRIMARY KEY (session, name)
);

-- Listings are ordered by (session, created_seq, name), optionally filtered
-- by status or task.
CREATE INDEX instances_in_order ON instances (session, created_seq, name);
CREATE INDEX instances_by_status ON instances (status, session, created_seq, name);
CREATE INDEX instances_by_task ON instances (task, session, created_seq, name);

-- Scheduled and running instances, with the lease of whoever runs them.
-- A row is claimable once `available_at` has passed, when it is unleased or
-- its lease has expired.
CREATE TABLE queue (
    session          TEXT COLLATE "C" NOT NULL,
    instance         TEXT COLLATE "C" NOT NULL,
    queue            TEXT        NOT NULL,
    run              TEXT        NOT NULL,
    available_at     TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_token      TEXT UNIQUE,
    lease_expires_at TIMESTAMPTZ,
    PRIMARY KEY (session, instance)
);

-- Claiming: the oldest available rows of one queue.
CREATE INDEX queue_claimable ON queue (queue, available_at);

-- Sweeping: leases that ran out.
CREATE INDEX queue_lease_expiry ON queue (lease_expires_at) WHERE lease_token IS NOT NULL;

-- The folded state of a session at `version`: an optimisation only, the log
-- after `version` is folded on top of it.
CREATE TABLE snapshots (
    session TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL,
    state   TEXT   NOT NULL
);

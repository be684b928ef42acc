//! SQLite's SQL for the write plan and for `replace_projections`: each step's
//! rows come from one JSON array parameter through `json_each`.
//!
//! Timestamps arrive as the fixed-width text they are stored as, so `<=` on
//! them compares instants. SQLite needs no row locks (the write transaction
//! holds the database's write lock), so there is no `Lock` step.

use super::super::plan::StepSql;

/// The SQL of each step of the write plan.
pub(super) const STEPS: StepSql = step_sql!(None);

/// How an instance row is updated: only when it would change.
macro_rules! instance_update {
    () => {
        "task = excluded.task, status = excluded.status, created_seq = excluded.created_seq, \
         updated_at = excluded.updated_at, body = excluded.body \
         WHERE (instances.task, instances.status, instances.created_seq, instances.updated_at, \
         instances.body) IS NOT (excluded.task, excluded.status, excluded.created_seq, \
         excluded.updated_at, excluded.body)"
    };
}

/// A session that passed its guard (or has none): its uid is in `$6`.
macro_rules! passed {
    () => {
        "value ->> 'session' IN (SELECT value FROM json_each($6))"
    };
}

/// The checks that hold: the row exists (found on its whole key), is available,
/// and its lease is free or expired, or held under `held`, or not in question.
const CHECKS: &str = "SELECT c.k FROM (SELECT value ->> 'k' AS k, value ->> 'session' AS session, \
     value ->> 'instance' AS instance, value ->> 'now' AS now, value ->> 'held' AS held, \
     value ->> 'only_available' AS only_available FROM json_each($1)) AS c \
     JOIN queue AS q ON q.session = c.session AND q.instance = c.instance \
     WHERE q.available_at <= c.now AND (c.only_available = 1 \
     OR (c.held IS NULL AND (q.lease_token IS NULL OR q.lease_expires_at <= c.now)) \
     OR (q.lease_token = c.held AND q.lease_expires_at > c.now))";

const STALE: &str = "SELECT g.uid FROM (SELECT value ->> 'uid' AS uid, \
     value ->> 'expected' AS expected FROM json_each($1)) AS g \
     LEFT JOIN sessions AS s ON s.uid = g.uid WHERE ifnull(s.version, 0) <> g.expected";

/// A session's first commit: no row comes back if someone else created it.
pub(super) const CREATE: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT value ->> 'uid', value ->> 'version', value ->> 'at' FROM json_each($1) WHERE true \
     ON CONFLICT (uid) DO NOTHING RETURNING uid";

/// Every later commit: no row comes back if the version moved on.
pub(super) const ADVANCE: &str = "UPDATE sessions SET version = g.version, updated_at = g.at \
     FROM (SELECT value ->> 'uid' AS uid, value ->> 'version' AS version, value ->> 'at' AS at, \
     value ->> 'expected' AS expected FROM json_each($1)) AS g \
     WHERE sessions.uid = g.uid AND sessions.version = g.expected RETURNING uid";

/// A row that would not change is left alone: its pages stay clean, so a
/// `rebuild` over projections that were right writes next to nothing.
const INSTANCES: &str = concat!(
    "INSERT INTO instances \
     (session, name, task, status, created_seq, updated_at, body) \
     SELECT value ->> 'session', value ->> 'name', value ->> 'task', value ->> 'status', \
     value ->> 'created_seq', value ->> 'updated_at', value ->> 'body' FROM json_each($1) \
     WHERE true ON CONFLICT (session, name) DO UPDATE SET ",
    instance_update!()
);

/// The writes of the decisions that passed their guards, one hop to SQLite's
/// thread: `$1` events, `$2` instance rows, `$3` whole queue rows (an enqueue
/// drops any lease, an enqueue leased at once sets it), `$4` relets, `$5`
/// queue rows to delete, `$6` the sessions that passed.
pub(super) const WRITES: &str = concat!(
    "INSERT INTO events (session, seq, kind, format, data, caused_by, instance, \
     trigger_name, at) SELECT value ->> 'session', value ->> 'seq', value ->> 'kind', \
     value ->> 'format', value ->> 'data', value ->> 'caused_by', value ->> 'instance', \
     value ->> 'trigger_name', value ->> 'at' FROM json_each($1) WHERE ",
    passed!(),
    "; INSERT INTO instances (session, name, task, status, created_seq, updated_at, body) \
     SELECT value ->> 'session', value ->> 'name', value ->> 'task', value ->> 'status', \
     value ->> 'created_seq', value ->> 'updated_at', value ->> 'body' FROM json_each($2) \
     WHERE ",
    passed!(),
    " ON CONFLICT (session, name) DO UPDATE SET ",
    instance_update!(),
    "; INSERT INTO queue (session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at) SELECT value ->> 'session', value ->> 'instance', \
     value ->> 'queue', value ->> 'run', value ->> 'available_at', value ->> 'lease_owner', \
     value ->> 'lease_token', value ->> 'lease_expires_at' FROM json_each($3) WHERE ",
    passed!(),
    " ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, \
     run = excluded.run, available_at = excluded.available_at, \
     lease_owner = excluded.lease_owner, lease_token = excluded.lease_token, \
     lease_expires_at = excluded.lease_expires_at; \
     UPDATE queue SET lease_owner = r.owner, lease_token = r.token, \
     lease_expires_at = r.expires_at \
     FROM (SELECT value ->> 'session' AS session, value ->> 'instance' AS instance, \
     value ->> 'lease_owner' AS owner, value ->> 'lease_token' AS token, \
     value ->> 'lease_expires_at' AS expires_at FROM json_each($4) WHERE ",
    passed!(),
    ") AS r WHERE queue.session = r.session AND queue.instance = r.instance; \
     DELETE FROM queue WHERE (session, instance) IN \
     (SELECT value ->> 'session', value ->> 'instance' FROM json_each($5) WHERE ",
    passed!(),
    ")"
);

/// The columns of a queue row from a JSON object.
macro_rules! queue_row {
    () => {
        "SELECT value ->> 'session', value ->> 'instance', value ->> 'queue', value ->> 'run', \
         value ->> 'available_at', value ->> 'lease_owner', value ->> 'lease_token', \
         value ->> 'lease_expires_at' FROM json_each($1) WHERE true "
    };
}

const PUT_SESSIONS: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT value ->> 'uid', value ->> 'version', value ->> 'at' FROM json_each($1) WHERE true \
     ON CONFLICT (uid) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at";

const DROP_INSTANCES: &str = "DELETE FROM instances \
     WHERE session IN (SELECT value ->> 'session' FROM json_each($1)) \
     AND (session, name) NOT IN (SELECT value ->> 'session', value ->> 'instance' \
     FROM json_each($1) WHERE value ->> 'instance' IS NOT NULL)";

const DROP_QUEUE: &str = "DELETE FROM queue \
     WHERE session IN (SELECT value ->> 'session' FROM json_each($1)) \
     AND (session, instance) NOT IN (SELECT value ->> 'session', value ->> 'instance' \
     FROM json_each($1) WHERE value ->> 'instance' IS NOT NULL)";

/// Existing rows keep their lease.
const RESTORE_QUEUE: &str = concat!(
    "INSERT INTO queue (session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at) ",
    queue_row!(),
    "ON CONFLICT (session, instance) DO UPDATE SET \
     queue = excluded.queue, run = excluded.run, available_at = excluded.available_at \
     WHERE (queue.queue, queue.run, queue.available_at) \
     IS NOT (excluded.queue, excluded.run, excluded.available_at)"
);

/// A rebuilt snapshot is always right, whatever was there (an identical one is
/// left alone).
const PUT_SNAPSHOTS: &str = "INSERT INTO snapshots (session, version, state) \
     SELECT value ->> 'session', value ->> 'version', value ->> 'state' FROM json_each($1) \
     WHERE true ON CONFLICT (session) DO UPDATE SET version = excluded.version, \
     state = excluded.state \
     WHERE (snapshots.version, snapshots.state) IS NOT (excluded.version, excluded.state)";

//! PostgreSQL's SQL for the write plan and for `replace_projections`: each
//! step's rows come from one JSON array parameter through `json_to_recordset`,
//! typed there (timestamps arrive as text and become `timestamptz`).
//!
//! Every lookup of an existing row joins on its whole key, (session, instance)
//! or (session, name) or uid, so it is planned as a probe of the primary key:
//! a session's dead queue rows (one per instance that ever left the queue) are
//! never walked. `Lock` and `Checks` lock the rows they find (`FOR UPDATE`),
//! sessions first and in uid order, so that another server's writer waits
//! rather than changing them before this transaction commits, and two
//! servers' groups cannot deadlock.

use super::super::plan::StepSql;

/// The SQL of each step of the write plan.
pub(super) const STEPS: StepSql = step_sql!(Some(LOCK));

/// How an instance row is updated: only when it would change.
macro_rules! instance_update {
    () => {
        "task = excluded.task, status = excluded.status, created_seq = excluded.created_seq, \
         updated_at = excluded.updated_at, body = excluded.body \
         WHERE (instances.task, instances.status, instances.created_seq, instances.updated_at, \
         instances.body) IS DISTINCT FROM (excluded.task, excluded.status, excluded.created_seq, \
         excluded.updated_at, excluded.body)"
    };
}

const LOCK: &str = "SELECT s.uid FROM sessions AS s \
     JOIN json_to_recordset($1::json) AS l(uid text) ON s.uid = l.uid \
     ORDER BY s.uid FOR UPDATE OF s";

/// The checks that hold (see the SQLite twin), their rows locked.
const CHECKS: &str = "SELECT c.k FROM json_to_recordset($1::json) \
     AS c(k bigint, session text, instance text, now timestamptz, held text, only_available int) \
     JOIN queue AS q ON q.session = c.session AND q.instance = c.instance \
     WHERE q.available_at <= c.now AND (c.only_available = 1 \
     OR (c.held IS NULL AND (q.lease_token IS NULL OR q.lease_expires_at <= c.now)) \
     OR (q.lease_token = c.held AND q.lease_expires_at > c.now)) \
     FOR UPDATE OF q";

const STALE: &str =
    "SELECT g.uid FROM json_to_recordset($1::json) AS g(uid text, expected bigint) \
     LEFT JOIN sessions AS s ON s.uid = g.uid WHERE coalesce(s.version, 0) <> g.expected";

/// A row that would not change is left alone (no new row version), so a
/// `rebuild` over projections that were right writes next to nothing.
const INSTANCES: &str = concat!(
    "INSERT INTO instances \
     (session, name, task, status, created_seq, updated_at, body) \
     SELECT session, name, task, status, created_seq, updated_at, body \
     FROM json_to_recordset($1::json) AS i(session text, name text, task text, status text, \
     created_seq bigint, updated_at timestamptz, body text) \
     ON CONFLICT (session, name) DO UPDATE SET ",
    instance_update!()
);

/// The columns of queue rows from a JSON array.
macro_rules! queue_rows {
    () => {
        "SELECT session, instance, queue, run, available_at, lease_owner, lease_token, \
         lease_expires_at FROM json_to_recordset($1::json) AS q(session text, instance text, \
         queue text, run text, available_at timestamptz, lease_owner text, lease_token text, \
         lease_expires_at timestamptz) "
    };
}

/// The guards and the writes of a group in one statement: `$1` first commits,
/// `$2` later ones, `$3` the sessions without a guard, then `$4` events, `$5`
/// instance rows, `$6` whole queue rows, `$7` relets, `$8` queue rows to delete.
/// Every write keeps only the rows of sessions in `ok`: those whose guard
/// passed (a concurrent writer is waited for on the row lock, then its new
/// version fails the guard) and the unguarded. The statements all see one
/// snapshot and touch disjoint rows (one decision per session, one change per
/// queue row). Returns the uids whose guard passed.
pub(super) const GUARD_AND_WRITE: &str = concat!(
    "WITH created AS (INSERT INTO sessions (uid, version, updated_at) \
     SELECT uid, version, at FROM json_to_recordset($1::json) \
     AS g(uid text, version bigint, at timestamptz) \
     ON CONFLICT (uid) DO NOTHING RETURNING uid), \
     advanced AS (UPDATE sessions SET version = g.version, updated_at = g.at \
     FROM json_to_recordset($2::json) \
     AS g(uid text, version bigint, at timestamptz, expected bigint) \
     WHERE sessions.uid = g.uid AND sessions.version = g.expected RETURNING sessions.uid), \
     passed AS (SELECT uid FROM created UNION ALL SELECT uid FROM advanced), \
     ok AS (SELECT uid FROM passed UNION ALL SELECT json_array_elements_text($3::json)), \
     ev AS (INSERT INTO events \
     (session, seq, kind, format, data, caused_by, instance, trigger_name, at) \
     SELECT session, seq, kind, format, data, caused_by, instance, trigger_name, at \
     FROM json_to_recordset($4::json) AS e(session text, seq bigint, kind text, format int, \
     data text, caused_by bigint, instance text, trigger_name text, at timestamptz) \
     WHERE session IN (SELECT uid FROM ok)), \
     inst AS (INSERT INTO instances \
     (session, name, task, status, created_seq, updated_at, body) \
     SELECT session, name, task, status, created_seq, updated_at, body \
     FROM json_to_recordset($5::json) AS i(session text, name text, task text, status text, \
     created_seq bigint, updated_at timestamptz, body text) \
     WHERE session IN (SELECT uid FROM ok) ON CONFLICT (session, name) DO UPDATE SET ",
    instance_update!(),
    "), put AS (INSERT INTO queue (session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at) SELECT session, instance, queue, run, available_at, \
     lease_owner, lease_token, lease_expires_at FROM json_to_recordset($6::json) \
     AS q(session text, instance text, queue text, run text, available_at timestamptz, \
     lease_owner text, lease_token text, lease_expires_at timestamptz) \
     WHERE session IN (SELECT uid FROM ok) \
     ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, \
     run = excluded.run, available_at = excluded.available_at, \
     lease_owner = excluded.lease_owner, lease_token = excluded.lease_token, \
     lease_expires_at = excluded.lease_expires_at), \
     relet AS (UPDATE queue SET lease_owner = r.lease_owner, lease_token = r.lease_token, \
     lease_expires_at = r.lease_expires_at \
     FROM json_to_recordset($7::json) AS r(session text, instance text, lease_owner text, \
     lease_token text, lease_expires_at timestamptz) \
     WHERE queue.session = r.session AND queue.instance = r.instance \
     AND r.session IN (SELECT uid FROM ok)), \
     del AS (DELETE FROM queue USING json_to_recordset($8::json) \
     AS d(session text, instance text) \
     WHERE queue.session = d.session AND queue.instance = d.instance \
     AND d.session IN (SELECT uid FROM ok)) \
     SELECT uid FROM passed"
);

const PUT_SESSIONS: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT uid, version, at FROM json_to_recordset($1::json) \
     AS s(uid text, version bigint, at timestamptz) \
     ON CONFLICT (uid) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at";

const DROP_INSTANCES: &str = "DELETE FROM instances \
     WHERE session IN (SELECT session FROM json_to_recordset($1::json) AS s(session text)) \
     AND (session, name) NOT IN (SELECT session, instance FROM json_to_recordset($1::json) \
     AS k(session text, instance text) WHERE instance IS NOT NULL)";

const DROP_QUEUE: &str = "DELETE FROM queue \
     WHERE session IN (SELECT session FROM json_to_recordset($1::json) AS s(session text)) \
     AND (session, instance) NOT IN (SELECT session, instance \
     FROM json_to_recordset($1::json) AS k(session text, instance text) \
     WHERE instance IS NOT NULL)";

/// Existing rows keep their lease.
const RESTORE_QUEUE: &str = concat!(
    "INSERT INTO queue (session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at) ",
    queue_rows!(),
    "ON CONFLICT (session, instance) DO UPDATE SET \
     queue = excluded.queue, run = excluded.run, available_at = excluded.available_at \
     WHERE (queue.queue, queue.run, queue.available_at) \
     IS DISTINCT FROM (excluded.queue, excluded.run, excluded.available_at)"
);

/// A rebuilt snapshot is always right, whatever was there (an identical one is
/// left alone).
const PUT_SNAPSHOTS: &str = "INSERT INTO snapshots (session, version, state) \
     SELECT session, version, state FROM json_to_recordset($1::json) \
     AS s(session text, version bigint, state text) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE (snapshots.version, snapshots.state) IS DISTINCT FROM (excluded.version, excluded.state)";

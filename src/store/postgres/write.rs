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

use super::super::plan::Step;

/// The SQL of `step`.
pub(super) fn sql(step: Step) -> &'static str {
    match step {
        Step::Lock => LOCK,
        Step::Checks => CHECKS,
        Step::Stale => STALE,
        Step::Create => CREATE,
        Step::Advance => ADVANCE,
        Step::Events => EVENTS,
        Step::Instances => INSTANCES,
        Step::Puts => PUTS,
        Step::Relets => RELETS,
        Step::Deletes => DELETES,
        Step::PutSessions => PUT_SESSIONS,
        Step::DropInstances => DROP_INSTANCES,
        Step::DropQueue => DROP_QUEUE,
        Step::RestoreQueue => RESTORE_QUEUE,
        Step::PutSnapshots => PUT_SNAPSHOTS,
    }
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

/// A session's first commit: no row comes back if someone else created it (a
/// concurrent creator is waited for).
const CREATE: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT uid, version, at FROM json_to_recordset($1::json) \
     AS g(uid text, version bigint, at timestamptz) \
     ON CONFLICT (uid) DO NOTHING RETURNING uid";

/// Every later commit: no row comes back if the version moved on.
const ADVANCE: &str = "UPDATE sessions SET version = g.version, updated_at = g.at \
     FROM json_to_recordset($1::json) \
     AS g(uid text, version bigint, at timestamptz, expected bigint) \
     WHERE sessions.uid = g.uid AND sessions.version = g.expected RETURNING sessions.uid";

const EVENTS: &str = "INSERT INTO events \
     (session, seq, kind, format, data, caused_by, instance, trigger_name, at) \
     SELECT session, seq, kind, format, data, caused_by, instance, trigger_name, at \
     FROM json_to_recordset($1::json) AS e(session text, seq bigint, kind text, format int, \
     data text, caused_by bigint, instance text, trigger_name text, at timestamptz)";

/// A row that would not change is left alone (no new row version), so a
/// `rebuild` over projections that were right writes next to nothing.
const INSTANCES: &str = "INSERT INTO instances \
     (session, name, task, status, created_seq, updated_at, body) \
     SELECT session, name, task, status, created_seq, updated_at, body \
     FROM json_to_recordset($1::json) AS i(session text, name text, task text, status text, \
     created_seq bigint, updated_at timestamptz, body text) \
     ON CONFLICT (session, name) DO UPDATE SET \
     task = excluded.task, status = excluded.status, created_seq = excluded.created_seq, \
     updated_at = excluded.updated_at, body = excluded.body \
     WHERE (instances.task, instances.status, instances.created_seq, instances.updated_at, \
     instances.body) IS DISTINCT FROM (excluded.task, excluded.status, excluded.created_seq, \
     excluded.updated_at, excluded.body)";

/// The columns of queue rows from a JSON array.
macro_rules! queue_rows {
    () => {
        "SELECT session, instance, queue, run, available_at, lease_owner, lease_token, \
         lease_expires_at FROM json_to_recordset($1::json) AS q(session text, instance text, \
         queue text, run text, available_at timestamptz, lease_owner text, lease_token text, \
         lease_expires_at timestamptz) "
    };
}

/// Whole rows: an enqueue drops any lease, an enqueue leased at once sets it.
const PUTS: &str = concat!(
    "INSERT INTO queue (session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at) ",
    queue_rows!(),
    "ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, run = excluded.run, \
     available_at = excluded.available_at, lease_owner = excluded.lease_owner, \
     lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at"
);

const RELETS: &str = "UPDATE queue SET lease_owner = r.lease_owner, lease_token = r.lease_token, \
     lease_expires_at = r.lease_expires_at \
     FROM json_to_recordset($1::json) AS r(session text, instance text, lease_owner text, \
     lease_token text, lease_expires_at timestamptz) \
     WHERE queue.session = r.session AND queue.instance = r.instance";

const DELETES: &str = "DELETE FROM queue USING json_to_recordset($1::json) \
     AS d(session text, instance text) \
     WHERE queue.session = d.session AND queue.instance = d.instance";

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

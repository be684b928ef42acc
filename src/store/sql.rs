//! The SQL both backends read with, in the one spelling they both accept
//! (`$n` parameters, row values, `TRUE`). Each backend keeps the statements it
//! spells its own way (lists of keys, aggregated logs, locks) and its writes.

pub(super) const PING: &str = "SELECT 1";

pub(super) const SESSION_VERSION: &str = "SELECT version FROM sessions WHERE uid = $1";

/// A NULL limit means none on PostgreSQL, a negative one on SQLite.
pub(super) const EVENTS_AFTER: &str = "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3";

pub(super) const INSTANCE_EVENTS: &str =
    "SELECT seq, kind, format, data, caused_by, at FROM events \
     WHERE session = $1 AND instance = $2 ORDER BY seq";

pub(super) const SNAPSHOT: &str = "SELECT version, state FROM snapshots WHERE session = $1";

/// Never replaces a newer snapshot with an older one.
pub(super) const SAVE_SNAPSHOT: &str =
    "INSERT INTO snapshots (session, version, state) VALUES ($1, $2, $3) \
     ON CONFLICT (session) DO UPDATE SET version = excluded.version, state = excluded.state \
     WHERE excluded.version >= snapshots.version";

/// UIDs are never empty, so `uid > ''` lists them all.
pub(super) const SESSIONS: &str = "SELECT uid, version, updated_at FROM sessions \
     WHERE uid > $1 ORDER BY uid LIMIT $2";

/// Sessions with a sessions row, and any with events but no row (a crash
/// cannot leave one, but `rebuild` should repair it if it happens).
pub(super) const SESSION_UIDS: &str =
    "SELECT uid FROM sessions UNION SELECT session FROM events ORDER BY 1";

/// Followed by the filters built in `instances`, then [`INSTANCES_END`].
pub(super) const INSTANCES: &str =
    "SELECT session, name, task, status, created_seq, updated_at, body FROM instances WHERE TRUE";
/// The cursor is the (session, name) of the last row returned: its row places
/// it in the listing's order. Followed by the session, [`INSTANCES_AFTER_NAME`]
/// and the name.
pub(super) const INSTANCES_AFTER: &str = " AND (session, created_seq, name) > \
     (SELECT session, created_seq, name FROM instances WHERE session = ";
pub(super) const INSTANCES_AFTER_NAME: &str = " AND name = ";
pub(super) const INSTANCES_END: &str = " ORDER BY session, created_seq, name LIMIT ";

pub(super) const CLAIMABLE: &str =
    "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE queue = $1 AND available_at <= $2 AND (lease_token IS NULL OR lease_expires_at <= $2) \
     ORDER BY available_at, session, instance LIMIT $3";

pub(super) const LEASED: &str = "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue WHERE lease_token = $1";

pub(super) const EXPIRED_LEASES: &str =
    "SELECT session, instance, queue, run, available_at, lease_owner, \
     lease_token, lease_expires_at FROM queue \
     WHERE lease_token IS NOT NULL AND lease_expires_at <= $1 \
     ORDER BY lease_expires_at, session, instance LIMIT $2";

/// Followed by `(?, ?, ..)` of at most [`IN_CHUNK`] seqs and [`EVENTS_BY_SEQ_END`].
pub(super) const EVENTS_BY_SEQ: &str =
    "SELECT seq, kind, format, data, caused_by, at FROM events WHERE session = ";
pub(super) const EVENTS_BY_SEQ_END: &str = " ORDER BY seq";

/// Bound parameters per `IN (..)` list.
pub(super) const IN_CHUNK: usize = 1000;

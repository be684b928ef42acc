//! The write plan: a group of decisions written in a constant number of
//! statements, whatever their number and size, on either backend.
//!
//! A [`Decision`] is a [`Commit`] encoded once, outside any lock: its events,
//! instance rows and the net effect of its queue changes on each instance's row
//! ([`reduce`]). A group of decisions (at most one per session) is then written
//! by [`write_group`] in a fixed sequence, every row set one JSON array
//! parameter:
//!
//! 1. only when a lease is checked on a stored queue row: `Lock`, the guarded
//!    sessions' rows in uid order (PostgreSQL; so that every writer takes
//!    session locks before queue-row locks, in one order, and two servers'
//!    groups cannot deadlock), then `Checks`, which refuse a decision whose
//!    lease does not hold (`LeaseLost`; `Stale` tells a stale one it is stale);
//! 2. [`Exec::guard_and_write`]: the version guards, and the events, instance
//!    rows and queue changes of the sessions that pass (a decision whose
//!    session moved on is refused alone: `Conflict`). One statement on
//!    PostgreSQL (a fire's whole group is one round trip, without
//!    `BEGIN`/`COMMIT`); on SQLite the guards, then every write in one hop.
//!
//! A refused decision never writes anything and needs no savepoint. Sessions
//! are distinct within a group, so no two decisions touch the same row, and each
//! check is made on the rows as they were before the group.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde::Serialize;

use super::codec::{timestamp, to_i64, to_json};
use super::queue_plan::{reduce, QueueChanges};
use super::{Commit, InstanceRow, StoreError, StoreResult};
use crate::domain::Event;

/// One statement of a group's write (or of `replace_projections`) that both
/// backends spell alike. Each backend has its SQL for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Locks the session rows of `[{uid}]`, in uid order.
    Lock,
    /// Returns `k` of each check `[{k, session, instance, now, held, only_available}]` that holds.
    Checks,
    /// Returns the uids of `[{uid, expected}]` whose session is not at `expected`
    /// (only for decisions already refused for a lease: a stale one is told so).
    Stale,
    /// Upserts instance rows (leaving identical ones alone).
    Instances,
    /// `replace_projections`: sets sessions rows `[{uid, version, at}]`.
    PutSessions,
    /// `replace_projections`: deletes the instance rows of `[{session, instance}]`'s
    /// sessions that it does not list (`instance` null: keep none).
    DropInstances,
    /// `replace_projections`: the same for queue rows.
    DropQueue,
    /// `replace_projections`: writes queue rows, leaving an existing row's lease.
    RestoreQueue,
    /// `replace_projections`: sets snapshots `[{session, version, state}]`,
    /// leaving identical ones alone.
    PutSnapshots,
}

/// A backend's SQL for each [`Step`], one row set parameter each; `lock` is
/// `None` where the backend needs no row locks (SQLite's write transaction
/// holds the database's write lock).
#[derive(Debug, Clone, Copy)]
pub(super) struct StepSql {
    pub(super) lock: Option<&'static str>,
    pub(super) checks: &'static str,
    pub(super) stale: &'static str,
    pub(super) instances: &'static str,
    pub(super) put_sessions: &'static str,
    pub(super) drop_instances: &'static str,
    pub(super) drop_queue: &'static str,
    pub(super) restore_queue: &'static str,
    pub(super) put_snapshots: &'static str,
}

impl StepSql {
    /// The SQL of `step`, if the backend has one.
    pub(super) fn of(&self, step: Step) -> Option<&'static str> {
        Some(match step {
            Step::Lock => return self.lock,
            Step::Checks => self.checks,
            Step::Stale => self.stale,
            Step::Instances => self.instances,
            Step::PutSessions => self.put_sessions,
            Step::DropInstances => self.drop_instances,
            Step::DropQueue => self.drop_queue,
            Step::RestoreQueue => self.restore_queue,
            Step::PutSnapshots => self.put_snapshots,
        })
    }
}

/// The guards and writes of a group's standing decisions, each row set a JSON
/// array (`None`: no rows).
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// First commits `[{uid, version, at, expected}]` (the session is created).
    pub(super) creates: Option<String>,
    /// Later commits `[{uid, version, at, expected}]` (the version advances).
    pub(super) advances: Option<String>,
    /// Sessions of decisions without events, hence without a guard.
    pub(super) unguarded: Vec<String>,
    /// `[{session, seq, kind, format, data, caused_by, instance, trigger_name, at}]`.
    pub(super) events: Option<String>,
    /// `[{session, name, task, status, created_seq, updated_at, body}]`.
    pub(super) instances: Option<String>,
    /// Whole queue rows, written over any row there (its lease too).
    pub(super) puts: Option<String>,
    /// `[{session, instance, lease_owner, lease_token, lease_expires_at}]`.
    pub(super) relets: Option<String>,
    /// Queue rows `[{session, instance}]` to delete.
    pub(super) deletes: Option<String>,
}

impl Writes {
    /// Whether there is a row to write besides the guards.
    pub(super) fn has_rows(&self) -> bool {
        [
            &self.events,
            &self.instances,
            &self.puts,
            &self.relets,
            &self.deletes,
        ]
        .iter()
        .any(|rows| rows.is_some())
    }
}

/// Runs the statements of a write on one connection inside its transaction.
#[async_trait]
pub(super) trait Exec: Send {
    /// Runs `step` over `rows` (a JSON array) and returns its integer column;
    /// `None` when the backend has no such step.
    async fn ints(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<i64>>>;
    /// Runs `step` and returns its text column (`None`: no such step).
    async fn texts(&mut self, step: Step, rows: String) -> StoreResult<Option<Vec<String>>>;
    /// Runs `step`.
    async fn run(&mut self, step: Step, rows: String) -> StoreResult<()>;
    /// Runs the guards and the writes of the sessions that pass them (and of
    /// the unguarded ones); returns the uids that passed their guard.
    async fn guard_and_write(&mut self, writes: &Writes) -> StoreResult<Vec<String>>;
}

/// Statements sent by the write path (`BEGIN` and `COMMIT` included) and
/// decisions written, since the process started (the `profile` bench).
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static DECISIONS: AtomicU64 = AtomicU64::new(0);

/// Counts `n` statements sent by the write path.
pub(super) fn count_statements(n: u64) {
    STATEMENTS.fetch_add(n, Ordering::Relaxed);
}

/// `(statements, decisions)` written by this process's stores so far.
pub fn write_counts() -> (u64, u64) {
    (
        STATEMENTS.load(Ordering::Relaxed),
        DECISIONS.load(Ordering::Relaxed),
    )
}

/// A session's decision, encoded and owned.
#[derive(Debug)]
pub(super) struct Decision {
    pub(super) session: String,
    pub(super) expected_version: u64,
    /// The version and time the guard advances the session to (no events: no
    /// guard, as for a lease renewal).
    guard: Option<(i64, String)>,
    events: Vec<EventRow>,
    instances: Vec<InstanceJson>,
    /// The queue changes, or the instance whose lease cannot hold whatever the
    /// stored rows say.
    queue: Result<QueueChanges, String>,
}

impl Decision {
    /// Encodes a commit; `None` when it writes nothing.
    pub(super) fn encode(commit: Commit<'_>) -> StoreResult<Option<Decision>> {
        if commit.events.is_empty() && commit.instances.is_empty() && commit.queue.is_empty() {
            return Ok(None);
        }
        let session = commit.session.to_owned();
        let events = commit
            .events
            .iter()
            .map(|event| EventRow::new(&session, event))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(Decision {
            guard: events.last().map(|last| (last.seq, last.at.clone())),
            expected_version: commit.expected_version,
            instances: InstanceJson::all(&commit.instances)?,
            queue: reduce(&commit.queue),
            events,
            session,
        }))
    }

    fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            session: self.session.clone(),
            expected: self.expected_version,
        }
    }

    fn lease_lost(&self, instance: &str) -> StoreError {
        StoreError::LeaseLost {
            session: self.session.clone(),
            instance: instance.to_owned(),
        }
    }
}

/// An event, encoded for its row.
#[derive(Debug, Serialize)]
struct EventRow {
    session: String,
    seq: i64,
    kind: &'static str,
    format: i32,
    data: String,
    caused_by: Option<i64>,
    instance: Option<String>,
    trigger_name: Option<String>,
    at: String,
}

impl EventRow {
    fn new(session: &str, event: &Event) -> StoreResult<Self> {
        Ok(Self {
            session: session.to_owned(),
            seq: to_i64(event.seq)?,
            kind: event.payload.kind(),
            format: crate::domain::event::PAYLOAD_FORMAT,
            data: to_json(&event.payload.to_data())?,
            caused_by: event.caused_by.map(to_i64).transpose()?,
            instance: event.payload.instance().map(str::to_owned),
            trigger_name: event.payload.trigger().map(str::to_owned),
            at: timestamp(event.at),
        })
    }
}

/// An instance row, encoded.
#[derive(Debug, Serialize)]
pub(super) struct InstanceJson {
    session: String,
    name: String,
    task: String,
    status: &'static str,
    created_seq: i64,
    updated_at: String,
    body: String,
}

impl InstanceJson {
    /// Encodes the rows, keeping only the last of each (session, name): one
    /// multi-row upsert may not touch a row twice.
    pub(super) fn all(rows: &[InstanceRow]) -> StoreResult<Vec<Self>> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            if seen.insert((row.session.as_str(), row.name.as_str())) {
                out.push(Self {
                    session: row.session.clone(),
                    name: row.name.clone(),
                    task: row.task.clone(),
                    status: row.status.as_str(),
                    created_seq: to_i64(row.created_seq)?,
                    updated_at: timestamp(row.updated_at),
                    body: row.body.clone(),
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The instance's session.
    pub(super) fn session(&self) -> &str {
        &self.session
    }

    /// The instance's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// Writes `group` (at most one decision per session) on `exec`, inside the
/// caller's transaction, in a constant number of statements. The outer error
/// is a statement that failed (the caller's transaction is then void); inside,
/// each decision's own outcome, in order. When every one was refused, nothing
/// is left to commit and the caller rolls back ([`nothing_stands`]).
pub(super) async fn write_group(
    exec: &mut impl Exec,
    group: &[&Decision],
) -> StoreResult<Vec<StoreResult<()>>> {
    DECISIONS.fetch_add(group.len() as u64, Ordering::Relaxed);
    let mut outcomes: Vec<StoreResult<()>> = group
        .iter()
        .map(|d| match &d.queue {
            Ok(_) => Ok(()),
            Err(instance) => Err(d.lease_lost(instance)),
        })
        .collect();
    let standing = |outcomes: &[StoreResult<()>]| -> Vec<usize> {
        (0..group.len()).filter(|&i| outcomes[i].is_ok()).collect()
    };

    // Session rows before queue rows (the checks below), in one order, in
    // every writer.
    let guarded: Vec<usize> = standing(&outcomes)
        .into_iter()
        .filter(|&i| group[i].guard.is_some() && group[i].expected_version > 0)
        .collect();
    if !guarded.is_empty() {
        let mut uids: Vec<&str> = guarded.iter().map(|&i| group[i].session.as_str()).collect();
        uids.sort_unstable();
        let rows: Vec<_> = uids.iter().map(|uid| Uid { uid }).collect();
        exec.run(Step::Lock, to_json(&rows)?).await?;
    }

    let mut checks = Vec::new();
    for i in standing(&outcomes) {
        if let Ok(queue) = &group[i].queue {
            for check in &queue.checks {
                checks.push((i, check));
            }
        }
    }
    if !checks.is_empty() {
        let rows: Vec<_> = checks
            .iter()
            .enumerate()
            .map(|(k, (i, check))| CheckJson {
                k: k as i64,
                session: &group[*i].session,
                instance: &check.instance,
                now: timestamp(check.now),
                held: check.held.as_deref(),
                only_available: i32::from(check.only_available),
            })
            .collect();
        let held = exec.ints(Step::Checks, to_json(&rows)?).await?;
        let held: HashSet<i64> = held.unwrap_or_default().into_iter().collect();
        for (k, (i, check)) in checks.iter().enumerate() {
            if !held.contains(&(k as i64)) && outcomes[*i].is_ok() {
                outcomes[*i] = Err(group[*i].lease_lost(&check.instance));
            }
        }
    }

    // A refused decision that was stale too is told it is stale: it must be
    // re-decided, whereas a lost lease is final.
    let lost: Vec<usize> = (0..group.len())
        .filter(|&i| outcomes[i].is_err() && group[i].guard.is_some())
        .collect();
    if !lost.is_empty() {
        let rows = guard_rows(group, &lost)?;
        let stale = exec.texts(Step::Stale, to_json(&rows)?).await?;
        let stale: HashSet<String> = stale.unwrap_or_default().into_iter().collect();
        for i in lost {
            if stale.contains(&group[i].session) {
                outcomes[i] = Err(group[i].conflict());
            }
        }
    }

    let standing_now = standing(&outcomes);
    let written: Vec<&Decision> = standing_now.iter().map(|&i| group[i]).collect();
    let writes = writes(&written)?;
    let passed = match exec.guard_and_write(&writes).await {
        Ok(passed) => passed,
        // A seq taken behind the guards' back (only a damaged sessions row
        // allows it): nothing of the group may commit, and each re-decides.
        Err(StoreError::Backend(sqlx::Error::Database(db))) if db.is_unique_violation() => {
            return Ok(group.iter().map(|d| Err(d.conflict())).collect());
        }
        Err(err) => return Err(err),
    };
    let passed: HashSet<&str> = passed.iter().map(String::as_str).collect();
    for i in standing_now {
        if group[i].guard.is_some() && !passed.contains(group[i].session.as_str()) {
            outcomes[i] = Err(group[i].conflict());
        }
    }
    Ok(outcomes)
}

/// Whether writing `group` takes more than the one statement of
/// [`Exec::guard_and_write`]: lease checks, and lease or delete changes to rows
/// already stored, are made in a transaction.
pub(super) fn needs_transaction(group: &[&Decision]) -> bool {
    group.iter().any(|d| match &d.queue {
        Ok(q) => !(q.checks.is_empty() && q.relets.is_empty() && q.deletes.is_empty()),
        Err(_) => true,
    })
}

/// The guards of `group`'s decisions `at` (which all have one).
fn guard_rows<'a>(group: &[&'a Decision], at: &[usize]) -> StoreResult<Vec<GuardJson<'a>>> {
    at.iter()
        .map(|&i| {
            let d = group[i];
            let (version, at) = d.guard.as_ref().expect("guarded");
            Ok(GuardJson {
                uid: &d.session,
                version: *version,
                at,
                expected: to_i64(d.expected_version)?,
            })
        })
        .collect()
}

/// Whether a group's outcomes leave nothing to commit (its transaction may
/// hold an advanced guard of a decision that then failed as a whole group).
pub(super) fn nothing_stands(outcomes: &[StoreResult<()>]) -> bool {
    outcomes.iter().all(Result::is_err)
}

/// The guards and row sets of the decisions still standing.
fn writes(written: &[&Decision]) -> StoreResult<Writes> {
    fn rows<T: Serialize>(rows: &[T]) -> StoreResult<Option<String>> {
        if rows.is_empty() {
            Ok(None)
        } else {
            to_json(&rows).map(Some)
        }
    }
    let (mut creates, mut advances, mut unguarded) = (Vec::new(), Vec::new(), Vec::new());
    for d in written {
        match &d.guard {
            Some((version, at)) => {
                let guard = GuardJson {
                    uid: &d.session,
                    version: *version,
                    at,
                    expected: to_i64(d.expected_version)?,
                };
                if d.expected_version == 0 {
                    creates.push(guard);
                } else {
                    advances.push(guard);
                }
            }
            None => unguarded.push(d.session.clone()),
        }
    }
    let events: Vec<&EventRow> = written.iter().flat_map(|d| &d.events).collect();
    let instances: Vec<&InstanceJson> = written.iter().flat_map(|d| &d.instances).collect();
    let queues = written
        .iter()
        .filter_map(|d| d.queue.as_ref().ok().map(|q| (d.session.as_str(), q)));
    let (mut puts, mut relets, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (session, queue) in queues {
        puts.extend(queue.puts.iter().map(|put| PutJson {
            session,
            instance: &put.instance,
            queue: &put.queue,
            run: &put.run,
            available_at: timestamp(put.available_at),
            lease_owner: put.lease.as_ref().map(|l| l.owner.as_str()),
            lease_token: put.lease.as_ref().map(|l| l.token.as_str()),
            lease_expires_at: put.lease.as_ref().map(|l| timestamp(l.expires_at)),
        }));
        relets.extend(queue.relets.iter().map(|relet| PutJson {
            session,
            instance: &relet.instance,
            queue: "",
            run: "",
            available_at: String::new(),
            lease_owner: Some(&relet.lease.owner),
            lease_token: Some(&relet.lease.token),
            lease_expires_at: Some(timestamp(relet.lease.expires_at)),
        }));
        deletes.extend(
            queue
                .deletes
                .iter()
                .map(|instance| Key { session, instance }),
        );
    }
    Ok(Writes {
        creates: rows(&creates)?,
        advances: rows(&advances)?,
        unguarded,
        events: rows(&events)?,
        instances: rows(&instances)?,
        puts: rows(&puts)?,
        relets: rows(&relets)?,
        deletes: rows(&deletes)?,
    })
}

#[derive(Serialize)]
struct Uid<'a> {
    uid: &'a str,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    k: i64,
    session: &'a str,
    instance: &'a str,
    now: String,
    held: Option<&'a str>,
    only_available: i32,
}

#[derive(Serialize)]
struct GuardJson<'a> {
    uid: &'a str,
    version: i64,
    at: &'a str,
    expected: i64,
}

/// A queue row (a relet leaves `queue`, `run` and `available_at` unused).
#[derive(Serialize)]
pub(super) struct PutJson<'a> {
    pub(super) session: &'a str,
    pub(super) instance: &'a str,
    pub(super) queue: &'a str,
    pub(super) run: &'a str,
    pub(super) available_at: String,
    pub(super) lease_owner: Option<&'a str>,
    pub(super) lease_token: Option<&'a str>,
    pub(super) lease_expires_at: Option<String>,
}

/// A queue row's key.
#[derive(Serialize)]
struct Key<'a> {
    session: &'a str,
    instance: &'a str,
}

//! The write plan: a group of decisions written in a constant number of
//! statements, whatever their number and size, on either backend.
//!
//! A [`Decision`] is a [`Commit`] encoded once, outside any lock: its events,
//! instance rows and the net effect of its queue changes on each instance's row
//! ([`reduce`]). A group of decisions (at most one per session) is then written
//! by [`write_group`] as a fixed sequence of [`Step`]s, each one statement
//! whose rows travel as one JSON array parameter:
//!
//! 1. `Lock`: the guarded sessions' rows, in uid order (PostgreSQL only: it
//!    makes every writer take session locks before queue-row locks, in one
//!    order, so two servers' groups cannot deadlock);
//! 2. `Checks`: the lease conditions that depend on stored queue rows; a
//!    decision with a failing one is refused alone (`LeaseLost`);
//! 3. `Create` / `Advance`: the version guards; a decision whose session moved
//!    on is refused alone (`Conflict`);
//! 4. `Events`, `Instances`, `Puts`, `Relets`, `Deletes`: the writes of the
//!    decisions still standing.
//!
//! Every statement's outcome is known before the next is built, so a refused
//! decision never writes anything and needs no savepoint. Sessions are distinct
//! within a group, so no two decisions touch the same row, and each check is
//! made on the rows as they were before the group.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::codec::{timestamp, to_i64, to_json};
use super::{Commit, InstanceRow, QueueOp, StoreError, StoreResult};
use crate::domain::Event;

/// One statement of a group's write. Each backend has its SQL for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Locks the session rows of `[{uid}]`, in uid order.
    Lock,
    /// Returns `k` of each check `[{k, session, instance, now, held, only_available}]` that holds.
    Checks,
    /// Returns the uids of `[{uid, expected}]` whose session is not at `expected`
    /// (only for decisions already refused for a lease: a stale one is told so).
    Stale,
    /// Inserts first sessions `[{uid, version, at}]`; returns the uids created.
    Create,
    /// Advances sessions `[{uid, version, at, expected}]`; returns the uids advanced.
    Advance,
    /// Inserts events.
    Events,
    /// Upserts instance rows (leaving identical ones alone).
    Instances,
    /// Writes whole queue rows (replacing any lease).
    Puts,
    /// Sets the lease of existing queue rows.
    Relets,
    /// Deletes queue rows `[{session, instance}]`.
    Deletes,
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

/// What a decision does to the queue, instance by instance.
#[derive(Debug, Default, PartialEq)]
struct QueueChanges {
    checks: Vec<Check>,
    puts: Vec<Put>,
    relets: Vec<Relet>,
    deletes: Vec<String>,
}

/// A lease condition on a stored queue row: it exists, is available at `now`,
/// and its lease is free or expired (`held` none), held under `held` and not
/// expired, or anything (`only_available`: only the availability is in question).
#[derive(Debug, PartialEq)]
struct Check {
    instance: String,
    now: DateTime<Utc>,
    held: Option<String>,
    only_available: bool,
}

/// A whole queue row, written over whatever is there.
#[derive(Debug, PartialEq)]
struct Put {
    instance: String,
    queue: String,
    run: String,
    available_at: DateTime<Utc>,
    lease: Option<Lease>,
}

/// A new lease on a stored row.
#[derive(Debug, Clone, PartialEq)]
struct Lease {
    owner: String,
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq)]
struct Relet {
    instance: String,
    lease: Lease,
}

/// Where a decision leaves one instance's queue row.
enum Last {
    Unchanged,
    Put(Put),
    Relet(Lease),
    Gone,
}

/// Whether a lease taken at `now` (under `current`, when renewing) holds on a
/// row whose lease is `lease`: the same rule as the checks' SQL.
fn lease_holds(lease: Option<&Lease>, now: DateTime<Utc>, current: Option<&str>) -> bool {
    match current {
        None => lease.is_none_or(|lease| lease.expires_at <= now),
        Some(token) => lease.is_some_and(|lease| lease.token == token && lease.expires_at > now),
    }
}

/// The net effect of `ops` on each instance's row, in the order the instances
/// were first touched, with the checks the stored rows must pass; `Err` with
/// the instance whose lease fails on what this decision itself wrote.
fn reduce(ops: &[QueueOp]) -> Result<QueueChanges, String> {
    let mut order: Vec<(&str, Last)> = Vec::with_capacity(ops.len());
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(ops.len());
    let mut checks = Vec::new();
    for op in ops {
        let instance = match op {
            QueueOp::Enqueue { instance, .. }
            | QueueOp::Remove { instance }
            | QueueOp::Lease { instance, .. } => instance.as_str(),
        };
        let at = *position.entry(instance).or_insert_with(|| {
            order.push((instance, Last::Unchanged));
            order.len() - 1
        });
        let last = &mut order[at].1;
        match op {
            QueueOp::Enqueue {
                queue,
                run,
                available_at,
                ..
            } => {
                *last = Last::Put(Put {
                    instance: instance.to_owned(),
                    queue: queue.clone(),
                    run: run.clone(),
                    available_at: *available_at,
                    lease: None,
                })
            }
            QueueOp::Remove { .. } => *last = Last::Gone,
            QueueOp::Lease {
                owner,
                token,
                expires_at,
                now,
                current_token,
                ..
            } => {
                let lease = Lease {
                    owner: owner.clone(),
                    token: token.clone(),
                    expires_at: *expires_at,
                };
                let current = current_token.as_deref();
                match last {
                    Last::Unchanged => {
                        checks.push(Check {
                            instance: instance.to_owned(),
                            now: *now,
                            held: current_token.clone(),
                            only_available: false,
                        });
                        *last = Last::Relet(lease);
                    }
                    Last::Put(put)
                        if put.available_at <= *now
                            && lease_holds(put.lease.as_ref(), *now, current) =>
                    {
                        put.lease = Some(lease)
                    }
                    Last::Relet(held) if lease_holds(Some(held), *now, current) => {
                        // The stored row's availability is still the question.
                        checks.push(Check {
                            instance: instance.to_owned(),
                            now: *now,
                            held: None,
                            only_available: true,
                        });
                        *held = lease;
                    }
                    _ => return Err(instance.to_owned()),
                }
            }
        }
    }
    let mut changes = QueueChanges {
        checks,
        ..QueueChanges::default()
    };
    for (instance, last) in order {
        match last {
            Last::Unchanged => {}
            Last::Put(put) => changes.puts.push(put),
            Last::Relet(lease) => changes.relets.push(Relet {
                instance: instance.to_owned(),
                lease,
            }),
            Last::Gone => changes.deletes.push(instance.to_owned()),
        }
    }
    Ok(changes)
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

    for first in [true, false] {
        let guards: Vec<usize> = standing(&outcomes)
            .into_iter()
            .filter(|&i| group[i].guard.is_some() && (group[i].expected_version == 0) == first)
            .collect();
        if guards.is_empty() {
            continue;
        }
        let rows = guard_rows(group, &guards)?;
        let step = if first { Step::Create } else { Step::Advance };
        let passed = exec.texts(step, to_json(&rows)?).await?.unwrap_or_default();
        let passed: HashSet<&str> = passed.iter().map(String::as_str).collect();
        for i in guards {
            if !passed.contains(group[i].session.as_str()) {
                outcomes[i] = Err(group[i].conflict());
            }
        }
    }

    let written: Vec<&Decision> = standing(&outcomes).into_iter().map(|i| group[i]).collect();
    match write_rows(exec, &written).await {
        // A seq taken behind the guards' back (only a damaged sessions row
        // allows it): nothing of the group may commit, and each re-decides.
        Err(StoreError::Backend(sqlx::Error::Database(db))) if db.is_unique_violation() => {
            Ok(group.iter().map(|d| Err(d.conflict())).collect())
        }
        Err(err) => Err(err),
        Ok(()) => Ok(outcomes),
    }
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

/// The writes of the decisions that passed their checks and guards.
async fn write_rows(exec: &mut impl Exec, written: &[&Decision]) -> StoreResult<()> {
    let events: Vec<&EventRow> = written.iter().flat_map(|d| &d.events).collect();
    if !events.is_empty() {
        exec.run(Step::Events, to_json(&events)?).await?;
    }
    let instances: Vec<&InstanceJson> = written.iter().flat_map(|d| &d.instances).collect();
    if !instances.is_empty() {
        exec.run(Step::Instances, to_json(&instances)?).await?;
    }
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
    if !puts.is_empty() {
        exec.run(Step::Puts, to_json(&puts)?).await?;
    }
    if !relets.is_empty() {
        exec.run(Step::Relets, to_json(&relets)?).await?;
    }
    if !deletes.is_empty() {
        exec.run(Step::Deletes, to_json(&deletes)?).await?;
    }
    Ok(())
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

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

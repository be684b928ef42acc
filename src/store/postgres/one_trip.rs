//! A decision committed in one round trip.
//!
//! The transaction path sends `BEGIN`, the version guard, the events, the
//! instance rows, one statement per queue change and `COMMIT`: 6-8 round trips,
//! and under load most of PostgreSQL's CPU goes to those statements. Here the
//! whole decision is one statement of data-modifying CTEs over array parameters.
//! A single statement is atomic on its own, so there is no `BEGIN`/`COMMIT`.
//! Every write joins the guard's `RETURNING` row, so when the guard finds the
//! session moved on, nothing is written and the statement returns 0.
//!
//! The CTEs all see one snapshot and may not touch a row twice, so the queue
//! changes are first reduced to one final change per instance. A lease reported
//! under the caller's token (an inline run or a worker reporting its outcome)
//! becomes a check that the row is still leased to that token, which the guard
//! depends on. Any other shape (a renewal the commit does not end with a new
//! row or a removal, a lease on a row this commit did not enqueue) goes the
//! transaction path instead, as does a decision without events.
//!
//! The checks read the queue as of the statement's snapshot, while the guard
//! waits for the session's row lock. That is exact here because every change
//! that can take a lease from its holder (a claim after expiry, the sweeper)
//! is itself a decision that moves the session's version, which the guard sees.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{NewEvent, NewInstance};
use crate::store::{Commit, QueueOp, StoreError, StoreResult};

/// Counts the leases still held as the commit reports them: `$28..$30` are the
/// instances, the tokens their holders report under, and the times of the checks.
const HELD: &str = "WITH held AS (SELECT count(*) AS n FROM queue, \
       unnest($28::text[], $29::text[], $30::timestamptz[]) AS c(instance, token, now) \
       WHERE queue.session = $1 AND queue.instance = c.instance AND queue.lease_token = c.token \
         AND queue.lease_expires_at > c.now AND queue.available_at <= c.now), \
     all_held AS (SELECT 1 FROM held WHERE n = cardinality($28::text[])), \
     guard AS (";

/// The guard of a session's first commit: no row is returned if someone else
/// created the session (`$4` is always 0 here; it keeps the parameters the same
/// as [`ADVANCE`]).
const CREATE: &str = "INSERT INTO sessions (uid, version, updated_at) \
     SELECT $1, $2, $3 FROM all_held WHERE $4::bigint = 0 \
     ON CONFLICT (uid) DO NOTHING RETURNING uid";

/// The guard of every later commit. A concurrent writer waits on the row lock,
/// then sees the new version and returns no row.
const ADVANCE: &str = "UPDATE sessions SET version = $2, updated_at = $3 \
     WHERE uid = $1 AND version = $4 AND EXISTS (SELECT 1 FROM all_held) RETURNING uid";

/// What follows the guard: `$5..$12` events, `$13..$19` instance rows,
/// `$20..$26` queue rows to write, `$27` queue rows to delete. Returns whether
/// the decision was written, how many leases were held, and the version the
/// statement saw (to tell a lost lease from a stale decision).
const WRITES: &str = "), \
     ev AS (INSERT INTO events \
       (session, seq, kind, format, data, caused_by, instance, trigger_name, at) \
       SELECT guard.uid, e.seq, e.kind, e.format, e.data, e.caused_by, e.instance, \
         e.trigger_name, e.at \
       FROM guard, unnest($5::bigint[], $6::text[], $7::int[], $8::text[], $9::bigint[], \
         $10::text[], $11::text[], $12::timestamptz[]) \
         AS e(seq, kind, format, data, caused_by, instance, trigger_name, at)), \
     inst AS (INSERT INTO instances (session, name, task, status, created_seq, updated_at, body) \
       SELECT i.session, i.name, i.task, i.status, i.created_seq, i.updated_at, i.body \
       FROM guard, unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::bigint[], \
         $18::timestamptz[], $19::text[]) \
         AS i(session, name, task, status, created_seq, updated_at, body) \
       ON CONFLICT (session, name) DO UPDATE SET task = excluded.task, \
         status = excluded.status, created_seq = excluded.created_seq, \
         updated_at = excluded.updated_at, body = excluded.body), \
     enq AS (INSERT INTO queue \
       (session, instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at) \
       SELECT guard.uid, q.instance, q.queue, q.run, q.available_at, q.lease_owner, \
         q.lease_token, q.lease_expires_at \
       FROM guard, unnest($20::text[], $21::text[], $22::text[], $23::timestamptz[], \
         $24::text[], $25::text[], $26::timestamptz[]) \
         AS q(instance, queue, run, available_at, lease_owner, lease_token, lease_expires_at) \
       ON CONFLICT (session, instance) DO UPDATE SET queue = excluded.queue, \
         run = excluded.run, available_at = excluded.available_at, \
         lease_owner = excluded.lease_owner, lease_token = excluded.lease_token, \
         lease_expires_at = excluded.lease_expires_at), \
     deq AS (DELETE FROM queue USING guard \
       WHERE queue.session = guard.uid AND queue.instance = ANY($27::text[])) \
     SELECT (SELECT count(*) FROM guard) AS written, (SELECT n FROM held) AS held, \
       (SELECT version FROM sessions WHERE uid = $1) AS version";

/// The statement for a commit at `expected_version`.
fn statement(expected_version: u64) -> &'static str {
    use std::sync::LazyLock;
    static FIRST: LazyLock<String> = LazyLock::new(|| format!("{HELD}{CREATE}{WRITES}"));
    static LATER: LazyLock<String> = LazyLock::new(|| format!("{HELD}{ADVANCE}{WRITES}"));
    if expected_version == 0 {
        &FIRST
    } else {
        &LATER
    }
}

/// Where a commit leaves one instance's queue row.
#[derive(Debug, PartialEq)]
enum Row<'a> {
    /// Written like this, replacing any row (and its lease).
    Put {
        queue: &'a str,
        run: &'a str,
        available_at: DateTime<Utc>,
        lease: Option<Lease<'a>>,
    },
    /// Deleted.
    Gone,
    /// Still leased, renewed under the token its holder reported: left to the
    /// transaction path unless a later op replaces or deletes the row.
    Renewed,
}

/// A lease its holder reports under: the row must still be leased to `token`,
/// unexpired, at `now`.
#[derive(Debug, PartialEq)]
struct Check<'a> {
    instance: &'a str,
    token: &'a str,
    now: DateTime<Utc>,
}

/// A commit's queue changes, reduced.
#[derive(Debug, PartialEq)]
struct Reduced<'a> {
    /// Each touched instance's final row, in the order first touched.
    rows: Vec<(&'a str, Row<'a>)>,
    /// Leases that must still be held for the commit to apply.
    checks: Vec<Check<'a>>,
}

/// A lease taken in the same commit that enqueues its row.
#[derive(Debug, PartialEq)]
struct Lease<'a> {
    owner: &'a str,
    token: &'a str,
    expires_at: DateTime<Utc>,
}

/// Each instance's queue row after `ops`, in the order the instances were first
/// touched, and the leases the commit relies on; `None` when an op's outcome
/// depends on the row in a way one statement cannot check (so only the
/// transaction path can tell whether it holds).
fn reduce<'a>(ops: &'a [QueueOp]) -> Option<Reduced<'a>> {
    let mut rows: Vec<(&'a str, Row<'a>)> = Vec::with_capacity(ops.len());
    let mut checks = Vec::new();
    let mut position: HashMap<&'a str, usize> = HashMap::with_capacity(ops.len());
    for op in ops {
        match op {
            QueueOp::Enqueue {
                instance,
                queue,
                run,
                available_at,
            } => set(
                &mut rows,
                &mut position,
                instance.as_str(),
                Row::Put {
                    queue,
                    run,
                    available_at: *available_at,
                    lease: None,
                },
            ),
            QueueOp::Remove { instance } => {
                set(&mut rows, &mut position, instance.as_str(), Row::Gone)
            }
            QueueOp::Lease {
                instance,
                owner,
                token,
                expires_at,
                now,
                current_token: None,
            } => {
                // Only a lease on the unleased row this commit enqueued, available
                // now: exactly what the conditional update would find and take.
                let i = *position.get(instance.as_str())?;
                match &mut rows[i].1 {
                    Row::Put {
                        available_at,
                        lease: lease @ None,
                        ..
                    } if *available_at <= *now => {
                        *lease = Some(Lease {
                            owner,
                            token,
                            expires_at: *expires_at,
                        });
                    }
                    _ => return None,
                }
            }
            QueueOp::Lease {
                instance,
                token,
                now,
                current_token: Some(current),
                ..
            } if current == token && !position.contains_key(instance.as_str()) => {
                // The holder reporting under its own lease, first thing in the
                // commit: the conditional update's test, made by the statement.
                checks.push(Check {
                    instance,
                    token,
                    now: *now,
                });
                set(&mut rows, &mut position, instance.as_str(), Row::Renewed);
            }
            QueueOp::Lease { .. } => return None,
        }
    }
    if rows.iter().any(|(_, row)| *row == Row::Renewed) {
        return None;
    }
    Some(Reduced { rows, checks })
}

/// Records `row` as where `instance`'s queue row ends up so far.
fn set<'a>(
    rows: &mut Vec<(&'a str, Row<'a>)>,
    position: &mut HashMap<&'a str, usize>,
    instance: &'a str,
    row: Row<'a>,
) {
    match position.get(instance) {
        Some(&i) => rows[i].1 = row,
        None => {
            position.insert(instance, rows.len());
            rows.push((instance, row));
        }
    }
}

/// Commits `commit` in one statement if it can; `Ok(false)` when it must take the
/// transaction path (nothing was sent).
pub(super) async fn commit(pool: &PgPool, commit: &Commit<'_>) -> StoreResult<bool> {
    if commit.events.is_empty() {
        return Ok(false);
    }
    let Some(Reduced {
        rows: queue,
        checks,
    }) = reduce(&commit.queue)
    else {
        return Ok(false);
    };
    let events = commit
        .events
        .iter()
        .map(NewEvent::new)
        .collect::<StoreResult<Vec<_>>>()?;
    let instances = NewInstance::all(&commit.instances)?;
    let last = events.last().expect("events is not empty");
    let (put, gone): (Vec<_>, Vec<_>) = queue
        .iter()
        .partition(|(_, row)| matches!(row, Row::Put { .. }));
    let put: Vec<_> = put
        .into_iter()
        .filter_map(|(instance, row)| match row {
            Row::Put {
                queue,
                run,
                available_at,
                lease,
            } => Some((*instance, *queue, *run, *available_at, lease.as_ref())),
            Row::Gone | Row::Renewed => None,
        })
        .collect();

    let (written, held, version): (i64, i64, Option<i64>) =
        sqlx::query_as(statement(commit.expected_version))
            .bind(commit.session)
            .bind(last.seq)
            .bind(last.at)
            .bind(super::to_i64(commit.expected_version)?)
            .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.format).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.caused_by).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.instance).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.trigger).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.session).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.name).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.task).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.status).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.created_seq).collect::<Vec<_>>())
            .bind(instances.iter().map(|i| i.updated_at).collect::<Vec<_>>())
            .bind(
                instances
                    .iter()
                    .map(|i| i.body.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(put.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(put.iter().map(|p| p.1).collect::<Vec<_>>())
            .bind(put.iter().map(|p| p.2).collect::<Vec<_>>())
            .bind(put.iter().map(|p| p.3).collect::<Vec<_>>())
            .bind(put.iter().map(|p| p.4.map(|l| l.owner)).collect::<Vec<_>>())
            .bind(put.iter().map(|p| p.4.map(|l| l.token)).collect::<Vec<_>>())
            .bind(
                put.iter()
                    .map(|p| p.4.map(|l| l.expires_at))
                    .collect::<Vec<_>>(),
            )
            .bind(
                gone.iter()
                    .map(|(instance, _)| *instance)
                    .collect::<Vec<_>>(),
            )
            .bind(checks.iter().map(|c| c.instance).collect::<Vec<_>>())
            .bind(checks.iter().map(|c| c.token).collect::<Vec<_>>())
            .bind(checks.iter().map(|c| c.now).collect::<Vec<_>>())
            .fetch_one(pool)
            .await
            .map_err(|err| {
                if super::is_event_collision(&err) {
                    conflict(commit)
                } else {
                    err.into()
                }
            })?;
    if written > 0 {
        return Ok(true);
    }
    // As the transaction path answers: a stale decision first, then a lost lease.
    let stale = version.unwrap_or(0) != super::to_i64(commit.expected_version)?;
    match checks.first() {
        Some(check) if !stale && held < checks.len() as i64 => Err(StoreError::LeaseLost {
            session: commit.session.to_owned(),
            instance: check.instance.to_owned(),
        }),
        _ => Err(conflict(commit)),
    }
}

fn conflict(commit: &Commit<'_>) -> StoreError {
    StoreError::Conflict {
        session: commit.session.to_owned(),
        expected: commit.expected_version,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, second).unwrap()
    }

    fn enqueue(instance: &str, available_at: DateTime<Utc>) -> QueueOp {
        QueueOp::Enqueue {
            instance: instance.into(),
            queue: "inline".into(),
            run: "job".into(),
            available_at,
        }
    }

    fn lease(instance: &str, now: DateTime<Utc>, current: Option<&str>) -> QueueOp {
        QueueOp::Lease {
            instance: instance.into(),
            owner: "me".into(),
            token: "t".into(),
            expires_at: at(50),
            now,
            current_token: current.map(str::to_owned),
        }
    }

    fn put(available_at: DateTime<Utc>, leased: bool) -> Row<'static> {
        Row::Put {
            queue: "inline",
            run: "job",
            available_at,
            lease: leased.then_some(Lease {
                owner: "me",
                token: "t",
                expires_at: at(50),
            }),
        }
    }

    #[test]
    fn an_enqueue_and_its_lease_become_one_leased_row() {
        let ops = [enqueue("a#0", at(1)), lease("a#0", at(1), None)];
        assert_eq!(
            reduce(&ops),
            Some(Reduced {
                rows: vec![("a#0", put(at(1), true))],
                checks: Vec::new(),
            })
        );
    }

    #[test]
    fn the_last_change_of_each_instance_wins_in_first_touch_order() {
        let ops = [
            enqueue("a#0", at(1)),
            QueueOp::Remove {
                instance: "b#0".into(),
            },
            QueueOp::Remove {
                instance: "a#0".into(),
            },
            enqueue("b#0", at(2)),
        ];
        assert_eq!(
            reduce(&ops),
            Some(Reduced {
                rows: vec![("a#0", Row::Gone), ("b#0", put(at(2), false))],
                checks: Vec::new(),
            })
        );
    }

    #[test]
    fn a_holder_reporting_under_its_lease_becomes_a_check() {
        // An outcome removes the row; a retry enqueues it again.
        let done = [
            lease("a#0", at(9), Some("t")),
            QueueOp::Remove {
                instance: "a#0".into(),
            },
        ];
        let retried = [lease("a#0", at(9), Some("t")), enqueue("a#0", at(20))];
        let check = || Check {
            instance: "a#0",
            token: "t",
            now: at(9),
        };
        assert_eq!(
            reduce(&done),
            Some(Reduced {
                rows: vec![("a#0", Row::Gone)],
                checks: vec![check()],
            })
        );
        assert_eq!(
            reduce(&retried),
            Some(Reduced {
                rows: vec![("a#0", put(at(20), false))],
                checks: vec![check()],
            })
        );
    }

    #[test]
    fn leases_that_depend_on_the_stored_row_take_the_transaction_path() {
        // Renewing and keeping the lease, taking a lease under another token,
        // leasing a row enqueued earlier, leasing one not available yet, or
        // leasing twice.
        for ops in [
            vec![lease("a#0", at(1), Some("t"))],
            vec![lease("a#0", at(1), Some("held"))],
            vec![lease("a#0", at(1), None)],
            vec![enqueue("a#0", at(5)), lease("a#0", at(1), None)],
            vec![
                enqueue("a#0", at(1)),
                lease("a#0", at(1), None),
                lease("a#0", at(1), None),
            ],
        ] {
            assert_eq!(reduce(&ops), None, "{ops:?}");
        }
    }
}

//! The net effect of a decision's queue changes on each instance's queue row
//! (for the write plan): what to write over a row, what lease to set on a
//! stored row, what to delete, and which lease conditions the stored rows must
//! still pass. A lease that cannot hold on what the decision itself wrote
//! refuses the decision before anything is sent.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::QueueOp;

/// What a decision does to the queue, instance by instance.
#[derive(Debug, Default, PartialEq)]
pub(super) struct QueueChanges {
    pub(super) checks: Vec<Check>,
    pub(super) puts: Vec<Put>,
    pub(super) relets: Vec<Relet>,
    pub(super) deletes: Vec<String>,
}

/// A lease condition on a stored queue row: it exists, is available at `now`,
/// and its lease is free or expired (`held` none), held under `held` and not
/// expired, or anything (`only_available`: only the availability is in question).
#[derive(Debug, PartialEq)]
pub(super) struct Check {
    pub(super) instance: String,
    pub(super) now: DateTime<Utc>,
    pub(super) held: Option<String>,
    pub(super) only_available: bool,
}

/// A whole queue row, written over whatever is there.
#[derive(Debug, PartialEq)]
pub(super) struct Put {
    pub(super) instance: String,
    pub(super) queue: String,
    pub(super) run: String,
    pub(super) available_at: DateTime<Utc>,
    pub(super) lease: Option<Lease>,
}

/// A new lease on a stored row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Lease {
    pub(super) owner: String,
    pub(super) token: String,
    pub(super) expires_at: DateTime<Utc>,
}

#[derive(Debug, PartialEq)]
pub(super) struct Relet {
    pub(super) instance: String,
    pub(super) lease: Lease,
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
pub(super) fn reduce(ops: &[QueueOp]) -> Result<QueueChanges, String> {
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

#[cfg(test)]
#[path = "queue_plan_tests.rs"]
mod tests;

//! `replace_projections` written once for both backends: sessions' rebuilt
//! projections in a constant number of statements, whatever their number.
//!
//! The sessions rows, the instance and queue rows no longer wanted, the rows
//! wanted (identical rows are left alone, existing queue rows keep their lease)
//! and the snapshots: one [`Step`] each, their rows one JSON array.

use std::collections::HashSet;

use serde::Serialize;

use super::codec::{timestamp, to_i64, to_json};
use super::plan::{Exec, InstanceJson, PutJson, Step};
use super::{QueueEntry, Rebuilt, StoreResult};

/// Writes `rebuilt` (one entry per session) on `exec`, inside the caller's
/// transaction.
pub(super) async fn write_rebuilt(exec: &mut impl Exec, rebuilt: &[Rebuilt]) -> StoreResult<()> {
    if rebuilt.is_empty() {
        return Ok(());
    }
    let mut sessions = Vec::with_capacity(rebuilt.len());
    let mut snapshots = Vec::with_capacity(rebuilt.len());
    let mut instances = Vec::new();
    let mut queue = Vec::new();
    for r in rebuilt {
        sessions.push(SessionJson {
            uid: &r.session,
            version: to_i64(r.version)?,
            at: timestamp(r.updated_at),
        });
        snapshots.push(SnapshotJson {
            session: &r.session,
            version: to_i64(r.snapshot.version)?,
            state: &r.snapshot.state,
        });
        instances.extend(InstanceJson::all(&r.instances)?);
        queue.extend(dedup_queue(&r.queue).into_iter().map(|entry| PutJson {
            session: &r.session,
            instance: &entry.instance,
            queue: &entry.queue,
            run: &entry.run,
            available_at: timestamp(entry.available_at),
            lease_owner: entry.lease_owner.as_deref(),
            lease_token: entry.lease_token.as_deref(),
            lease_expires_at: entry.lease_expires_at.map(timestamp),
        }));
    }
    exec.run(Step::PutSessions, to_json(&sessions)?).await?;
    let keep = keys(rebuilt, instances.iter().map(|i| (i.session(), i.name())));
    exec.run(Step::DropInstances, to_json(&keep)?).await?;
    if !instances.is_empty() {
        exec.run(Step::Instances, to_json(&instances)?).await?;
    }
    let keep = keys(rebuilt, queue.iter().map(|q| (q.session, q.instance)));
    exec.run(Step::DropQueue, to_json(&keep)?).await?;
    if !queue.is_empty() {
        exec.run(Step::RestoreQueue, to_json(&queue)?).await?;
    }
    exec.run(Step::PutSnapshots, to_json(&snapshots)?).await?;
    Ok(())
}

/// The rows to keep, and a row with no instance for each session (so that a
/// session keeping none is still named).
fn keys<'a>(
    rebuilt: &'a [Rebuilt],
    kept: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<OptKey<'a>> {
    let mut keys: Vec<OptKey<'a>> = rebuilt
        .iter()
        .map(|r| OptKey {
            session: &r.session,
            instance: None,
        })
        .collect();
    keys.extend(kept.map(|(session, instance)| OptKey {
        session,
        instance: Some(instance),
    }));
    keys
}

/// The last entry of each instance, in order.
fn dedup_queue(entries: &[QueueEntry]) -> Vec<&QueueEntry> {
    let mut seen = HashSet::new();
    let mut out: Vec<_> = entries
        .iter()
        .rev()
        .filter(|entry| seen.insert(entry.instance.as_str()))
        .collect();
    out.reverse();
    out
}

#[derive(Serialize)]
struct SessionJson<'a> {
    uid: &'a str,
    version: i64,
    at: String,
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    session: &'a str,
    version: i64,
    state: &'a str,
}

/// A key to keep, or (`instance` none) a session to clear.
#[derive(Serialize)]
struct OptKey<'a> {
    session: &'a str,
    instance: Option<&'a str>,
}

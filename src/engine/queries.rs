//! The read side: session state (live and as of a version), timelines, audit, and
//! `rebuild`, which recomputes every projection from the log alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use super::cache::Slot;
use super::{instance_row, Engine, Error, Result};
use crate::domain::{DomainError, Event, InstanceName, InstanceStatus, SessionState, SessionUid};
use crate::store::{
    EventQuery, InstanceQuery, InstanceRow, QueueEntry, Rebuilt, RecentSessions, SessionSummary,
    StoredSnapshot,
};

/// What `rebuild` did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// Sessions rebuilt.
    pub sessions: usize,
    /// Events folded.
    pub events: u64,
    /// Instance rows written.
    pub instances: usize,
    /// Queue rows kept or restored.
    pub queued: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl Engine {
    /// The current state of a session (empty, version 0, if never used).
    pub async fn session(&self, session: &SessionUid) -> Result<Arc<SessionState>> {
        let slot = self.inner.cache.slot(session.as_str());
        let mut slot = slot.lock().await;
        self.catch_up(session, &mut slot).await?;
        Ok(slot.state.clone().expect("caught up"))
    }

    /// The state folded from events 1..=`version` (metadata timestamps included).
    pub async fn session_as_of(&self, session: &SessionUid, version: u64) -> Result<SessionState> {
        let events = self.inner.store.events(session, 0, Some(version)).await?;
        Ok(SessionState::fold(session.as_str(), &events)?)
    }

    /// Events with seq > `after`, ascending, at most `first`.
    pub async fn events(
        &self,
        session: &SessionUid,
        after: u64,
        first: Option<u64>,
    ) -> Result<Vec<Event>> {
        Ok(self.inner.store.events(session, after, first).await?)
    }

    /// Every event about one instance, ascending.
    pub async fn instance_history(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> Result<Vec<Event>> {
        Ok(self.inner.store.instance_events(session, instance).await?)
    }

    /// The events with these seqs, ascending (unknown seqs are left out).
    pub async fn events_by_seq(&self, session: &SessionUid, seqs: &[u64]) -> Result<Vec<Event>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.inner.store.events_by_seq(session, seqs).await?)
    }

    /// The `TriggerFired` events behind an instance's kwargs and abandon state.
    pub async fn instance_causes(
        &self,
        session: &SessionUid,
        instance: &InstanceName,
    ) -> Result<Vec<Event>> {
        let state = self.session(session).await?;
        let inst = state.instance(instance.as_str()).ok_or_else(|| {
            Error::from(DomainError::NotFound(format!(
                "session {session:?} has no instance {instance:?}"
            )))
        })?;
        Ok(self
            .inner
            .store
            .events_by_seq(session, &inst.cause_seqs())
            .await?)
    }

    /// Sessions by UID (keyset pagination).
    pub async fn sessions(&self, first: u32, after: Option<&str>) -> Result<Vec<SessionSummary>> {
        Ok(self.inner.store.sessions(first, after).await?)
    }

    /// Sessions most recently updated first, from the sessions table (keyset
    /// pagination, optionally by UID prefix).
    pub async fn recent_sessions(&self, query: RecentSessions<'_>) -> Result<Vec<SessionSummary>> {
        Ok(self.inner.store.recent_sessions(query).await?)
    }

    /// Each session's instances counted by status, from the projection table.
    pub async fn instance_counts(
        &self,
        sessions: &[String],
    ) -> Result<Vec<Vec<(InstanceStatus, u64)>>> {
        Ok(self.inner.store.instance_counts(sessions).await?)
    }

    /// One page of a session's events, filtered by kind and instance, ascending.
    pub async fn session_events(
        &self,
        session: &SessionUid,
        query: &EventQuery<'_>,
    ) -> Result<Vec<Event>> {
        Ok(self.inner.store.session_events(session, query).await?)
    }

    /// Instances across sessions, from the projection table.
    pub async fn instances(&self, query: InstanceQuery<'_>) -> Result<Vec<InstanceRow>> {
        Ok(self.inner.store.instances(query).await?)
    }

    /// Recomputes every projection and snapshot from the event log alone.
    ///
    /// Sessions go in batches of [`REBUILD_BATCH`]: one read of their logs, folds
    /// spread over the cores, one transaction writing their projections; the
    /// next batch is read and folded while one is written. Each session's cache
    /// slot is held from before its log is read until its new state is in
    /// place, so commands on it wait rather than interleave.
    pub async fn rebuild(&self) -> Result<RebuildReport> {
        let uids = self.inner.store.session_uids().await?;
        self.rebuild_sessions(&uids).await
    }

    /// [`Engine::rebuild`] for the sessions `uids` only (an import rebuilds
    /// the sessions it appended to); a session without events is left alone.
    pub async fn rebuild_sessions(&self, uids: &[String]) -> Result<RebuildReport> {
        let started = Instant::now();
        let mut report = RebuildReport {
            sessions: 0,
            events: 0,
            instances: 0,
            queued: 0,
            elapsed: Duration::ZERO,
        };
        for uid in uids {
            SessionUid::parse(uid.as_str())?;
        }
        let mut batches = uids.chunks(REBUILD_BATCH);
        let mut next = match batches.next() {
            Some(batch) => Some(self.fold_batch(batch).await?),
            None => None,
        };
        while let Some(batch) = next.take() {
            let FoldedBatch {
                mut slots,
                states,
                rebuilt,
            } = batch;
            for projections in &rebuilt {
                report.sessions += 1;
                report.events += projections.version;
                report.instances += projections.instances.len();
                report.queued += projections.queue.len();
            }
            // The write (encoding included) is a task of its own, so the next
            // batch is read and folded on the other cores meanwhile. Should
            // `rebuild` be dropped half way, the write is dropped with it, as it
            // would be were it awaited here.
            let store = self.inner.store.clone();
            let mut write = AbortOnDrop(tokio::spawn(async move {
                let written = store.replace_projections(&rebuilt).await;
                drop_elsewhere(rebuilt);
                written
            }));
            let folded = match batches.next() {
                Some(upcoming) => self.fold_batch(upcoming).await.map(Some),
                None => Ok(None),
            };
            // The slots stay held until the write is over, even when the fold failed.
            match (&mut write.0).await {
                Ok(written) => written?,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            }
            next = folded?;
            // `states` holds the sessions with events, in batch order.
            let mut states = states.into_iter().peekable();
            let mut replaced = Vec::with_capacity(slots.len());
            for slot in &mut slots {
                if let Some(state) = states.next_if(|state| state.uid() == slot.0) {
                    slot.1.snapshot_version = state.version();
                    replaced.push(slot.1.state.replace(Arc::new(state)));
                }
            }
            drop(slots);
            drop_elsewhere(replaced);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// `rebuild`'s read and fold of one batch of sessions, their slots held.
    async fn fold_batch(&self, batch: &[String]) -> Result<FoldedBatch> {
        let mut slots = Vec::with_capacity(batch.len());
        for uid in batch {
            let slot = self.inner.cache.slot(uid).lock_owned().await;
            slots.push((uid.clone(), slot));
        }
        let logs = self.inner.store.session_logs(batch).await?;
        let mut work: Vec<(String, Vec<Event>)> = batch.iter().cloned().zip(logs).collect();
        let lanes = std::thread::available_parallelism().map_or(1, usize::from);
        let per_lane = work.len().div_ceil(lanes).max(1);
        let mut folds = Vec::with_capacity(lanes);
        while !work.is_empty() {
            let lane: Vec<_> = work.drain(..per_lane.min(work.len())).collect();
            folds.push(tokio::task::spawn_blocking(move || {
                lane.into_iter()
                    .map(|(uid, events)| rebuild_session(uid, &events))
                    .collect::<Result<Vec<_>>>()
            }));
        }
        let mut folded = FoldedBatch {
            slots,
            states: Vec::with_capacity(batch.len()),
            rebuilt: Vec::with_capacity(batch.len()),
        };
        for fold in folds {
            let lane = match fold.await {
                Ok(lane) => lane?,
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            };
            for (state, projections) in lane.into_iter().flatten() {
                folded.states.push(state);
                folded.rebuilt.push(projections);
            }
        }
        Ok(folded)
    }
}

/// One batch of `rebuild`, folded and waiting to be written.
struct FoldedBatch {
    /// Each session's cache slot, held.
    slots: Vec<(String, OwnedMutexGuard<Slot>)>,
    /// The new states of the sessions with events, in batch order.
    states: Vec<SessionState>,
    /// Their projections.
    rebuilt: Vec<Rebuilt>,
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Frees a large value (states, projections: many small allocations) on a
/// blocking thread rather than on the async path that let go of it.
fn drop_elsewhere<T: Send + 'static>(value: T) {
    tokio::task::spawn_blocking(move || drop(value));
}

/// Sessions `rebuild` reads, folds and writes together.
const REBUILD_BATCH: usize = 32;

/// Folds one session's log into its state and the projections `rebuild` writes
/// for it; `None` for a session without events.
fn rebuild_session(uid: String, events: &[Event]) -> Result<Option<(SessionState, Rebuilt)>> {
    let state = SessionState::fold(uid.as_str(), events)?;
    let Some(updated_at) = state.updated_at() else {
        return Ok(None);
    };
    let instances: Vec<InstanceRow> = state
        .instances()
        .iter()
        .map(|i| instance_row(&uid, i))
        .collect();
    let queue: Vec<QueueEntry> = state
        .instances()
        .iter()
        .filter(|i| i.status.is_queued())
        .map(|i| QueueEntry {
            session: uid.clone(),
            instance: i.name.clone(),
            queue: i
                .runner
                .as_ref()
                .map_or(crate::domain::Runner::DEFAULT_QUEUE, |r| r.queue_name())
                .to_owned(),
            run: state
                .task(&i.task)
                .map(|t| t.run.clone())
                .unwrap_or_default(),
            available_at: updated_at.min(super::now()),
            lease_owner: None,
            lease_token: None,
            lease_expires_at: None,
        })
        .collect();
    let rebuilt = Rebuilt {
        version: state.version(),
        updated_at,
        instances,
        queue,
        snapshot: StoredSnapshot {
            version: state.version(),
            state: state.to_snapshot(),
        },
        session: uid,
    };
    Ok(Some((state, rebuilt)))
}

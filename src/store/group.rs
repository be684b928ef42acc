//! Group commit, for both backends: one durable transaction for several
//! sessions' decisions.
//!
//! Every commit waits for its own fsync, and every statement is a conversation
//! with the database (a hop to sqlx's SQLite thread, a PostgreSQL round trip).
//! Decisions that queue up behind the store's one committer are instead
//! committed together: whoever gets the writer lock (the *leader*) takes the
//! waiting decisions (at most one per session, up to the group size), has the
//! backend write them with the [`plan`](super::plan) in a constant number of
//! statements (a stale guard or a lost lease refuses only its own decision),
//! commits once, and answers each waiter. Nobody is answered before the one
//! `COMMIT` is durable, so grouping trades no durability; a lone writer commits
//! alone. [`committed`] is the one place that sees each committed group's size.
//!
//! The batch runs in a task of its own holding the writer lock, so a leader whose
//! caller goes away (a dropped future) cannot abandon the others' decisions
//! half-written. A waiter that gives up (busy timeout, or its future dropped)
//! withdraws its decision if no batch has taken it yet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::plan::Decision;
use super::{GroupObserver, StoreError, StoreResult};

/// A backend's side of a group commit.
#[async_trait]
pub(super) trait GroupStore: Clone + Send + Sync + 'static {
    /// Writes `group` in one transaction (with [`super::plan::write_group`]) and
    /// commits it.
    async fn commit_group(&self, group: &[&Decision]) -> Grouped;
}

/// How a group's transaction went.
pub(super) enum Grouped {
    /// It failed before every decision had its own outcome: all of them fail.
    Failed(StoreError),
    /// Each decision's own outcome, and then the `COMMIT`'s.
    Written {
        outcomes: Vec<StoreResult<()>>,
        commit: StoreResult<()>,
    },
}

/// Called once per committed group with the number of decisions it made
/// durable (the committed ones, not those refused alone).
fn committed(observer: Option<&GroupObserver>, decisions: usize) {
    tracing::trace!(decisions, "group committed");
    if let Some(observer) = observer {
        observer(decisions);
    }
}

struct Waiting {
    id: u64,
    decision: Decision,
    answer: oneshot::Sender<StoreResult<()>>,
}

/// The decisions waiting for the writer, and the writer lock itself.
pub(super) struct Writer {
    lock: Arc<tokio::sync::Mutex<()>>,
    waiting: Mutex<VecDeque<Waiting>>,
    next_id: AtomicU64,
    max_group: usize,
    /// Told each committed group's size (the engine's metrics).
    observer: std::sync::OnceLock<GroupObserver>,
    /// The size of the last batch taken (tests look).
    #[cfg(test)]
    pub(super) last_batch: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("waiting", &self.waiting)
            .field("max_group", &self.max_group)
            .field("observed", &self.observer.get().is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("id", &self.id)
            .field("session", &self.decision.session)
            .finish()
    }
}

impl Writer {
    /// A writer committing up to `max_group` decisions per transaction (1: each
    /// alone).
    pub(super) fn new(max_group: usize) -> Writer {
        Writer {
            lock: Arc::new(tokio::sync::Mutex::new(())),
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            max_group: max_group.max(1),
            observer: std::sync::OnceLock::new(),
            #[cfg(test)]
            last_batch: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Has `observer` told each committed group's size (the first one set stays).
    pub(super) fn observe(&self, observer: GroupObserver) {
        let _ = self.observer.set(observer);
    }

    /// Waits for this process's earlier writers, at most `timeout`, for a write
    /// that does not take part in grouping (snapshots, rebuilds).
    pub(super) async fn turn(&self, timeout: Duration) -> StoreResult<OwnedMutexGuard<()>> {
        tokio::time::timeout(timeout, self.lock.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Busy(timeout))
    }

    /// Commits `decision`, alone or with others that wait at the same time.
    pub(super) async fn commit<S: GroupStore>(
        self: &Arc<Self>,
        store: &S,
        decision: Decision,
        timeout: Duration,
    ) -> StoreResult<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, mut answered) = oneshot::channel();
        self.waiting
            .lock()
            .expect("not poisoned")
            .push_back(Waiting {
                id,
                decision,
                answer,
            });
        let mut withdraw = WithdrawOnDrop {
            writer: self,
            id: Some(id),
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut answered => break outcome,
                guard = self.lock.clone().lock_owned() => {
                    // Lead: take whatever waits (ours, unless an earlier batch
                    // took it, or it is beyond this batch; then keep waiting).
                    let batch = self.take_batch();
                    if !batch.is_empty() {
                        tokio::spawn(run_batch(store.clone(), guard, batch, self.observer.get().cloned()));
                    }
                }
                () = &mut deadline => {
                    if self.withdraw(id) {
                        withdraw.id = None;
                        return Err(StoreError::Busy(timeout));
                    }
                    // A batch holds it: the answer is on its way.
                    break answered.await;
                }
            }
        };
        withdraw.id = None;
        outcome.unwrap_or_else(|_| {
            Err(StoreError::GroupFailed {
                message: "the writer task stopped before answering".into(),
                transient: true,
            })
        })
    }

    /// Up to `max_group` waiting decisions, oldest first, at most one per
    /// session (a later one of the same session waits for the next group).
    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let mut sessions = std::collections::HashSet::new();
        let mut batch = Vec::with_capacity(waiting.len().min(self.max_group));
        let mut later = VecDeque::new();
        while let Some(next) = waiting.pop_front() {
            if batch.len() < self.max_group && sessions.insert(next.decision.session.clone()) {
                batch.push(next);
            } else {
                later.push_back(next);
            }
        }
        *waiting = later;
        #[cfg(test)]
        self.last_batch.store(batch.len(), Ordering::Relaxed);
        batch
    }

    /// How many decisions wait (tests look).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.waiting.lock().expect("not poisoned").len()
    }

    /// Removes a decision no batch has taken yet; false if one has.
    fn withdraw(&self, id: u64) -> bool {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        match waiting.iter().position(|w| w.id == id) {
            Some(at) => {
                waiting.remove(at);
                true
            }
            None => false,
        }
    }
}

/// Withdraws a waiting decision whose caller went away.
struct WithdrawOnDrop<'a> {
    writer: &'a Writer,
    id: Option<u64>,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.writer.withdraw(id);
        }
    }
}

/// Has the backend write `batch` in one transaction and answers every waiter.
/// Holds the writer lock throughout.
async fn run_batch<S: GroupStore>(
    store: S,
    _lock: OwnedMutexGuard<()>,
    batch: Vec<Waiting>,
    observer: Option<GroupObserver>,
) {
    let decisions: Vec<&Decision> = batch.iter().map(|w| &w.decision).collect();
    let grouped = store.commit_group(&decisions).await;
    drop(decisions);
    match grouped {
        // A lone decision keeps its own error.
        Grouped::Failed(err) if batch.len() == 1 => {
            answer(batch.into_iter().next().expect("one"), Err(err))
        }
        Grouped::Failed(err) => fail_all(batch, &err),
        Grouped::Written { outcomes, commit } => {
            let durable = outcomes.iter().filter(|o| o.is_ok()).count();
            if commit.is_ok() && durable > 0 {
                committed(observer.as_ref(), durable);
            }
            let lone = batch.len() == 1;
            let mut commit = commit.err();
            for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                // A decision refused on its own keeps its own reason.
                let outcome = match outcome {
                    Ok(()) if lone && commit.is_some() => Err(commit.take().expect("set")),
                    Ok(()) => commit.as_ref().map_or(Ok(()), |err| Err(share(err))),
                    refused => refused,
                };
                answer(waiting, outcome);
            }
        }
    }
}

fn answer(waiting: Waiting, outcome: StoreResult<()>) {
    // The caller may have gone away; its decision's fate is in the log.
    let _ = waiting.answer.send(outcome);
}

fn fail_all(batch: Vec<Waiting>, err: &StoreError) {
    for waiting in batch {
        answer(waiting, Err(share(err)));
    }
}

/// The same failure for every member of a group.
fn share(err: &StoreError) -> StoreError {
    StoreError::GroupFailed {
        message: err.to_string(),
        transient: err.is_transient(),
    }
}

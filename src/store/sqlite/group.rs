//! Group commit for SQLite: one durable transaction for several sessions'
//! decisions.
//!
//! SQLite has one write lock per database, and with `synchronous = FULL` every
//! commit waits for its own fsync. Decisions that queue up behind the writer are
//! instead committed together: whoever gets the writer lock (the *leader*) takes
//! every waiting decision, writes each inside its own savepoint (a failed version
//! guard or lease rolls back only that decision), commits once, and answers each
//! waiter. Nobody is answered before the one `COMMIT` is durable, so grouping
//! trades no durability; a lone writer commits alone, exactly as before.
//!
//! The batch runs in a task of its own holding the writer lock, so a leader whose
//! caller goes away (a dropped future) cannot abandon the others' decisions
//! half-written. A waiter that gives up (busy timeout, or its future dropped)
//! withdraws its decision if no batch has taken it yet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::{write_decision, NewEvent, NewInstance, BEGIN_WRITE};
use crate::store::{QueueOp, StoreError, StoreResult};

/// Most decisions in one transaction unless configured (bounds the latency of
/// the first).
pub(super) const DEFAULT_MAX_GROUP: usize = 64;

/// One session's decision, encoded and owned, waiting for the writer.
pub(super) struct Decision {
    pub(super) session: String,
    pub(super) expected_version: u64,
    pub(super) events: Vec<NewEvent>,
    pub(super) instances: Vec<NewInstance>,
    pub(super) queue: Vec<QueueOp>,
}

struct Waiting {
    id: u64,
    decision: Decision,
    answer: oneshot::Sender<StoreResult<()>>,
}

/// The decisions waiting for the writer, and the writer lock itself.
#[derive(Debug)]
pub(super) struct Writer {
    lock: Arc<tokio::sync::Mutex<()>>,
    waiting: Mutex<VecDeque<Waiting>>,
    next_id: AtomicU64,
    max_group: usize,
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
        }
    }

    /// Waits for this process's earlier writers, at most `timeout`, for a write
    /// that does not take part in grouping (snapshots, rebuilds).
    pub(super) async fn turn(&self, timeout: Duration) -> StoreResult<OwnedMutexGuard<()>> {
        tokio::time::timeout(timeout, self.lock.clone().lock_owned())
            .await
            .map_err(|_| StoreError::Busy(timeout))
    }

    /// Commits `decision`, alone or with others that wait at the same time.
    pub(super) async fn commit(
        self: &Arc<Self>,
        pool: &SqlitePool,
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
                        tokio::spawn(run_batch(pool.clone(), guard, batch));
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

    /// Up to `max_group` waiting decisions, oldest first.
    fn take_batch(&self) -> Vec<Waiting> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        let n = waiting.len().min(self.max_group);
        waiting.drain(..n).collect()
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

/// Writes `batch` in one transaction (each decision in a savepoint when there are
/// several), commits, and answers every waiter. Holds the writer lock throughout.
async fn run_batch(pool: SqlitePool, _lock: OwnedMutexGuard<()>, batch: Vec<Waiting>) {
    let mut tx = match pool.begin_with(BEGIN_WRITE).await {
        Ok(tx) => tx,
        Err(err) => return fail_all(batch, &err.into()),
    };
    let grouped = batch.len() > 1;
    let mut written = Vec::with_capacity(batch.len());
    for waiting in batch {
        if !grouped {
            match write_decision(&mut tx, &waiting.decision).await {
                Ok(()) => written.push((waiting, Ok(()))),
                // Dropping the transaction rolls it back.
                Err(err) => return answer(waiting, Err(err)),
            }
            continue;
        }
        let outcome = async {
            sqlx::query("SAVEPOINT decision").execute(&mut *tx).await?;
            let outcome = write_decision(&mut tx, &waiting.decision).await;
            if outcome.is_err() {
                sqlx::query("ROLLBACK TO decision")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("RELEASE decision").execute(&mut *tx).await?;
            Ok::<_, StoreError>(outcome)
        }
        .await;
        match outcome {
            Ok(outcome) => written.push((waiting, outcome)),
            // The savepoint machinery itself failed: nothing is trustworthy.
            Err(err) => {
                let shared = share(&err);
                answer(waiting, Err(err));
                let rest = written.into_iter().map(|(waiting, _)| waiting);
                return fail_all(rest.collect(), &shared);
            }
        }
    }
    match tx.commit().await {
        Ok(()) => {
            for (waiting, outcome) in written {
                answer(waiting, outcome);
            }
        }
        Err(err) => {
            let err = StoreError::from(err);
            for (waiting, outcome) in written {
                // A decision refused on its own keeps its own reason.
                answer(waiting, outcome.and(Err(share(&err))));
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

//! Work left behind: at open, inline instances a previous process left
//! scheduled are run again; the sweeper, every `sweep_interval`, returns the
//! instances of expired leases to the queue and picks up inline work nobody
//! started.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::inline::InlineWork;
use super::lease::Lease;
use super::{now, Engine, Error, Inner, Result};
use crate::domain::SessionUid;

impl Engine {
    /// At open: run inline instances a previous process left scheduled.
    pub(crate) async fn recover(&self) {
        match self.inner.store.claimable("inline", now(), 10_000).await {
            Ok(rows) if !rows.is_empty() => {
                tracing::info!(
                    count = rows.len(),
                    "recovering inline instances left scheduled by a previous process"
                );
                for row in rows {
                    tracing::info!(
                        session = row.session,
                        instance = row.instance,
                        "re-running inline instance"
                    );
                    self.spawn_inline(
                        SessionUid::stored(&row.session),
                        InlineWork {
                            instance: row.instance,
                            not_before: None,
                        },
                    );
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "could not look for inline work to recover"),
        }
    }

    /// One pass of the sweeper: expire ended leases, pick up orphaned inline work.
    pub async fn sweep(&self) -> Result<usize> {
        let at = now();
        let mut swept = 0;
        for row in self.inner.store.expired_leases(at, 100).await? {
            // A lease that ends at once: it only fences off the expired one.
            let sweeper = Lease::fresh("sweeper", Duration::ZERO);
            let owner = row.lease_owner.clone();
            let result = self
                .execute(
                    &SessionUid::stored(&row.session),
                    |d| d.expire_lease(&row.instance, owner.clone()),
                    |at| vec![sweeper.take(&row.instance, at)],
                )
                .await;
            match result {
                Ok(_) => {
                    swept += 1;
                    self.inner.metrics.lease_expirations.inc();
                    tracing::info!(session = row.session, instance = row.instance, worker = ?row.lease_owner, "lease expired; instance returned to the queue");
                }
                Err(Error::Conflict(_)) => {}
                Err(err) => {
                    tracing::warn!(session = row.session, instance = row.instance, error = %err, "could not expire a lease")
                }
            }
        }
        let grace = chrono::Duration::from_std(self.inner.options.inline_lease).unwrap_or_default();
        for row in self
            .inner
            .store
            .claimable("inline", at - grace, 100)
            .await?
        {
            swept += 1;
            self.spawn_inline(
                SessionUid::stored(&row.session),
                InlineWork {
                    instance: row.instance,
                    not_before: None,
                },
            );
        }
        Ok(swept)
    }
}

/// Runs the sweeper until the engine shuts down or is dropped.
pub(crate) fn start_sweeper(engine: &Engine, interval: Duration) {
    let weak: Weak<Inner> = Arc::downgrade(&engine.inner);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let engine = Engine { inner };
            if let Err(err) = engine.sweep().await {
                tracing::warn!(error = %err, "lease sweep failed");
            }
        }
    });
}

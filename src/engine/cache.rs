//! A bounded in-memory cache of session states, one lock per session.
//!
//! The lock serialises commands on a session inside this process (so they never
//! race each other on the version); the state it guards is an optimisation only:
//! a missing or discarded state is reloaded from the latest snapshot plus the
//! events after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::Mutex;

use crate::domain::SessionState;

/// What the cache keeps for one session.
#[derive(Default)]
pub(crate) struct Slot {
    /// The folded state; `None` until loaded, or after a failed commit.
    pub(crate) state: Option<Arc<SessionState>>,
    /// Version of the latest snapshot stored for the session.
    pub(crate) snapshot_version: u64,
}

struct Entry {
    slot: Arc<Mutex<Slot>>,
    last_used: AtomicU64,
}

/// Session UID -> slot, evicting the least recently used idle slots past capacity.
pub(crate) struct Cache {
    entries: StdMutex<HashMap<String, Entry>>,
    capacity: usize,
    clock: AtomicU64,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: StdMutex::new(HashMap::new()),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The slot of a session, created empty if absent.
    pub(crate) fn slot(&self, session: &str) -> Arc<Mutex<Slot>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get(session) {
            entry.last_used.store(tick, Ordering::Relaxed);
            return entry.slot.clone();
        }
        if entries.len() >= self.capacity {
            evict(&mut entries, self.capacity);
        }
        let slot = Arc::new(Mutex::new(Slot::default()));
        entries.insert(
            session.to_owned(),
            Entry {
                slot: slot.clone(),
                last_used: AtomicU64::new(tick),
            },
        );
        slot
    }

    /// Drops every cached state (tests use it to prove the cache is only an optimisation).
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, entry| Arc::strong_count(&entry.slot) > 1);
    }
}

/// Removes the oldest tenth of the idle slots (those nobody holds).
fn evict(entries: &mut HashMap<String, Entry>, capacity: usize) {
    let mut idle: Vec<(u64, String)> = entries
        .iter()
        .filter(|(_, entry)| Arc::strong_count(&entry.slot) == 1)
        .map(|(key, entry)| (entry.last_used.load(Ordering::Relaxed), key.clone()))
        .collect();
    idle.sort_unstable();
    for (_, key) in idle.into_iter().take((capacity / 10).max(1)) {
        entries.remove(&key);
    }
}

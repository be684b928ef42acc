//! Snapshots: a state saved as JSON so that loading a long session does not
//! fold its whole log. Only the facts are saved; the indexes are rebuilt on load.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{HashMap, KeyedFire, LatestFire, SessionState};
use crate::domain::{DomainError, Instance, InstanceStatus, TaskConfig};

/// The persisted form of a state (snapshots). Indexes are rebuilt on load.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotV1 {
    uid: String,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    tasks: BTreeMap<String, TaskConfig>,
    instances: Vec<Instance>,
    latest: BTreeMap<String, LatestFire>,
    keyed: HashMap<String, KeyedFire>,
    last_keyed: Option<(u64, String)>,
}

/// [`SnapshotV1`] borrowed from a live state, to write one without copying it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRef<'a> {
    uid: &'a str,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "tasks_by_value")]
    tasks: &'a BTreeMap<String, Arc<TaskConfig>>,
    instances: &'a [Instance],
    latest: &'a BTreeMap<String, LatestFire>,
    keyed: &'a HashMap<String, KeyedFire>,
    last_keyed: &'a Option<(u64, String)>,
}

fn tasks_by_value<S: serde::Serializer>(
    tasks: &BTreeMap<String, Arc<TaskConfig>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tasks.iter().map(|(name, task)| (name, task.as_ref())))
}

impl SessionState {
    /// Serialises the state for a snapshot.
    pub fn to_snapshot(&self) -> String {
        let snapshot = SnapshotRef {
            uid: &self.uid,
            version: self.version,
            updated_at: self.updated_at,
            tasks: &self.tasks,
            instances: &self.instances,
            latest: &self.latest,
            keyed: &self.keyed,
            last_keyed: &self.last_keyed,
        };
        serde_json::to_string(&snapshot).expect("session state always serialises")
    }

    /// Restores a state saved by [`SessionState::to_snapshot`].
    pub fn from_snapshot(text: &str) -> Result<Self, DomainError> {
        let snapshot: SnapshotV1 = serde_json::from_str(text)
            .map_err(|err| DomainError::Corrupt(format!("snapshot: {err}")))?;
        let mut state = Self {
            uid: snapshot.uid,
            version: snapshot.version,
            updated_at: snapshot.updated_at,
            tasks: snapshot
                .tasks
                .into_iter()
                .map(|(name, task)| (name, Arc::new(task)))
                .collect(),
            instances: snapshot.instances,
            latest: snapshot.latest,
            keyed: snapshot.keyed,
            last_keyed: snapshot.last_keyed,
            ..Self::default()
        };
        state.reindex_triggers();
        for (position, inst) in state.instances.iter().enumerate() {
            state.by_name.insert(inst.name.clone(), position);
            let entry = state.by_task.entry(inst.task.clone()).or_default();
            entry.all.push(position);
            if inst.status == InstanceStatus::Unstarted {
                entry.unstarted.insert(position);
            }
        }
        Ok(state)
    }
}

//! Every event kind by its pinned name, for the callers that name kinds
//! themselves (the filters of a timeline) and must be told when a name is none.

/// The kinds [`EventPayload::kind`](super::EventPayload::kind) can return, in
/// the order events of a task's life usually come.
pub const EVENT_KINDS: [&str; 15] = [
    "SessionConfigured",
    "TriggerFired",
    "InstanceCreated",
    "TriggerApplied",
    "InstanceScheduled",
    "InstanceStarted",
    "InstanceFinished",
    "InstanceFailed",
    "InstanceSkipped",
    "InstanceReplayed",
    "InstanceAbandoned",
    "InstanceStatusChanged",
    "InstanceMetadataUpdated",
    "InstanceLogsResolved",
    "InstanceLeaseExpired",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventPayload;

    #[test]
    fn every_listed_kind_names_a_payload() {
        for kind in EVENT_KINDS {
            // A listed kind fails for its missing fields, never as an unknown variant.
            let err = serde_json::from_value::<EventPayload>(serde_json::json!({"kind": kind}))
                .map(|payload| payload.kind().to_owned())
                .map_err(|err| err.to_string());
            match err {
                Ok(parsed) => assert_eq!(parsed, kind),
                Err(message) => assert!(!message.contains("unknown variant"), "{kind}: {message}"),
            }
        }
    }
}

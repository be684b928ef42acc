//! Names as the engine and the store take them, from the literals tests write:
//! `uid("s1")`, `trigger("tick")`, `instance("t#0")`. A name that does not
//! parse fails the test where it is written.

use crate::domain::{InstanceName, SessionUid, TriggerName};

/// `name` as a session uid.
pub fn uid(name: &str) -> SessionUid {
    SessionUid::parse(name).unwrap_or_else(|err| panic!("session uid {name:?}: {err}"))
}

/// `name` as a trigger name.
pub fn trigger(name: &str) -> TriggerName {
    TriggerName::parse(name).unwrap_or_else(|err| panic!("trigger name {name:?}: {err}"))
}

/// `name` as an instance name.
pub fn instance(name: &str) -> InstanceName {
    InstanceName::parse(name).unwrap_or_else(|err| panic!("instance name {name:?}: {err}"))
}

//! Names that arrive from callers, parsed once at the boundary: session uids,
//! trigger names and instance names, each its own type so that one cannot be
//! passed where another is expected.
//!
//! Each is a thin wrapper over an `Arc<str>`: parsing copies the text once,
//! and every clone after that (into a spawned run, a broadcast, a hook, a
//! result) is a reference count, not a copy. They hash, compare and borrow
//! as the `str` they hold, so maps keyed by them are looked up by `&str`, and
//! deref to it, so a name goes wherever text does; text (or another kind of
//! name) never goes where a name is expected.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::DomainError;

/// Longest name accepted, in bytes of UTF-8. Names key the database's indexes,
/// where PostgreSQL refuses entries past about 2.7 KB and one entry may hold a
/// session uid, a task name and an instance name together.
pub const MAX_NAME_BYTES: usize = 512;

/// Longest instance name accepted, in bytes: a task name of at most
/// [`MAX_NAME_BYTES`], `#`, and a number of at most 20 digits.
pub const MAX_INSTANCE_NAME_BYTES: usize = MAX_NAME_BYTES + 21;

/// Why `name` cannot be a name (session uid, trigger, task, queue, ...): it is
/// empty, longer than [`MAX_NAME_BYTES`], or holds a NUL character (PostgreSQL
/// text cannot store one). `what` says which name, for the message; long names
/// are not repeated in it.
pub fn name_problem(what: &str, name: &str) -> Option<String> {
    bounded_name_problem(what, name, MAX_NAME_BYTES)
}

/// [`name_problem`] with a limit of `max_bytes`.
fn bounded_name_problem(what: &str, name: &str, max_bytes: usize) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{what} must not be empty"));
    }
    if name.len() > max_bytes {
        let start: String = name.chars().take(16).collect();
        return Some(format!(
            "{what} must be at most {max_bytes} bytes, got {} bytes ({start:?}...)",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Some(format!("{what} {name:?} must not contain NUL characters"));
    }
    None
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Accepts any non-empty string of at most its limit in bytes without
            /// NUL; names are stored and returned verbatim.
            pub fn parse(raw: impl AsRef<str>) -> Result<Self, DomainError> {
                let raw = raw.as_ref();
                if let Some(problem) = bounded_name_problem($what, raw, $max) {
                    return Err(DomainError::BadInput(problem));
                }
                Ok(Self(Arc::from(raw)))
            }

            /// A name read back from the log or the projections, where only
            /// parsed names are ever written: taken as it is.
            pub(crate) fn stored(raw: &str) -> Self {
                Self(Arc::from(raw))
            }

            /// The name as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// As the `str` it holds (`"applicant:42"`), so messages that quote a
        /// name read the same whether they hold a name or its text.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// A name reads as its text wherever a `&str` is taken; the reverse
        /// takes [`parse`](Self::parse).
        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                String::from(&*name.0)
            }
        }
    };
}

name_type!(
    /// A session UID: any non-empty caller-chosen string (`applicant:42`).
    SessionUid,
    "session uid",
    MAX_NAME_BYTES
);
name_type!(
    /// The name of a fired trigger (or of a task, when it cascades).
    TriggerName,
    "trigger name",
    MAX_NAME_BYTES
);
name_type!(
    /// The name of an instance, `<task>#<n>`: made by the domain when it
    /// creates one ([`InstanceName::numbered`]), parsed when a caller names one
    /// (at most [`MAX_INSTANCE_NAME_BYTES`]).
    InstanceName,
    "instance name",
    MAX_INSTANCE_NAME_BYTES
);

impl InstanceName {
    /// `<task>#<n>`: the name of the `n`th instance (from 0) of `task`.
    pub fn numbered(task: &str, n: usize) -> Self {
        Self(Arc::from(format!("{task}#{n}")))
    }
}

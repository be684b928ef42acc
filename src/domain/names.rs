//! Names that arrive from callers, parsed once at the boundary.

use std::fmt;

use super::DomainError;

/// Longest name accepted, in bytes of UTF-8. Names key the database's indexes,
/// where PostgreSQL refuses entries past about 2.7 KB and one entry may hold a
/// session uid, a task name and an instance name together.
pub const MAX_NAME_BYTES: usize = 512;

/// Why `name` cannot be a name (session uid, trigger, task, queue, ...): it is
/// empty, longer than [`MAX_NAME_BYTES`], or holds a NUL character (PostgreSQL
/// text cannot store one). `what` says which name, for the message; long names
/// are not repeated in it.
pub fn name_problem(what: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{what} must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        let start: String = name.chars().take(16).collect();
        return Some(format!(
            "{what} must be at most {MAX_NAME_BYTES} bytes, got {} bytes ({start:?}...)",
            name.len()
        ));
    }
    if name.contains('\0') {
        return Some(format!("{what} {name:?} must not contain NUL characters"));
    }
    None
}

macro_rules! non_empty_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts any non-empty string of at most [`MAX_NAME_BYTES`] without NUL;
            /// names are stored and returned verbatim.
            pub fn parse(raw: impl Into<String>) -> Result<Self, DomainError> {
                let raw = raw.into();
                if let Some(problem) = name_problem($what, &raw) {
                    return Err(DomainError::BadInput(problem));
                }
                Ok(Self(raw))
            }

            /// The name as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

non_empty_name!(
    /// A session UID: any non-empty caller-chosen string (`applicant:42`).
    SessionUid,
    "session uid"
);
non_empty_name!(
    /// The name of a fired trigger (or of a task, when it cascades).
    TriggerName,
    "trigger name"
);

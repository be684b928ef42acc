//! Names that arrive from callers, parsed once at the boundary.

use std::fmt;

use super::DomainError;

macro_rules! non_empty_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Accepts any non-empty string; names are stored and returned verbatim.
            pub fn parse(raw: impl Into<String>) -> Result<Self, DomainError> {
                let raw = raw.into();
                if raw.is_empty() {
                    return Err(DomainError::BadInput(format!("{} must not be empty", $what)));
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

//! Engine errors: a domain refusal, or what the engine itself adds (a lost
//! lease, contention, storage failures), each with the GraphQL
//! `extensions.code` it maps to.

use crate::domain::DomainError;
use crate::store::StoreError;

/// Why an engine operation failed. Nothing is written when one fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule of the domain said no (or the engine refused input the same way):
    /// bad configuration or input, an unknown task or instance, a status that
    /// does not allow the operation, a log that does not fold. The message is
    /// the domain's own.
    #[error("{}", .0.message())]
    Domain(#[from] DomainError),
    /// A lease expired or was re-claimed.
    #[error("{0}")]
    Conflict(String),
    /// Too many writers raced on one session; the operation gave up.
    #[error("session {0:?} is too contended: gave up after repeated version conflicts")]
    Contended(String),
    /// Stored rows the store cannot read back.
    #[error("{0}")]
    Corrupt(String),
    /// The database is unreachable, restarting or busy: retry. A fire that failed
    /// this way may have been applied; with the same idempotency key, a retry is
    /// applied at most once.
    #[error("the database is unavailable or busy; retry (a fire retried with the same idempotencyKey is applied at most once)")]
    Unavailable(#[source] StoreError),
    /// The database failed.
    #[error("storage failure: {0}")]
    Store(#[source] StoreError),
}

impl Error {
    /// Malformed input: non-object kwargs/result/metadata, empty names, bad limits.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Error::Domain(DomainError::BadInput(message.into()))
    }

    /// The GraphQL `extensions.code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Domain(DomainError::BadConfiguration(_)) => "BAD_CONFIGURATION",
            Error::Domain(DomainError::BadInput(_)) => "BAD_INPUT",
            Error::Domain(DomainError::NotFound(_)) => "NOT_FOUND",
            Error::Domain(DomainError::InvalidState(_)) => "INVALID_STATE",
            Error::Conflict(_) | Error::Contended(_) => "CONFLICT",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Domain(DomainError::Corrupt(_)) | Error::Corrupt(_) | Error::Store(_) => {
                "INTERNAL"
            }
        }
    }

    /// Whether the message is safe and useful to show a client (internal errors are
    /// logged with their cause instead).
    pub fn is_client_error(&self) -> bool {
        self.code() != "INTERNAL"
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt(m) => Error::Corrupt(m),
            StoreError::LeaseLost { session, instance } => Error::Conflict(format!(
                "the lease on instance {instance:?} of session {session:?} expired or was claimed by another worker"
            )),
            StoreError::BadUrl(url) => Error::bad_input(StoreError::BadUrl(url).to_string()),
            // Opening failed: the message names the database and what to check.
            err @ StoreError::CannotOpen { .. } => Error::Store(err),
            other if other.is_transient() => Error::Unavailable(other),
            other => Error::Store(other),
        }
    }
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

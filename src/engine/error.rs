//! Engine errors: domain refusals and storage failures, each with the GraphQL
//! `extensions.code` it maps to.

use crate::domain::DomainError;
use crate::store::StoreError;

/// Why an engine operation failed. Nothing is written when one fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `configure` validation failed.
    #[error("{0}")]
    BadConfiguration(String),
    /// Malformed input: non-object kwargs/result/metadata, empty names, bad limits.
    #[error("{0}")]
    BadInput(String),
    /// Unknown task, instance or lease.
    #[error("{0}")]
    NotFound(String),
    /// The instance's status does not allow the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A lease expired or was re-claimed.
    #[error("{0}")]
    Conflict(String),
    /// Too many writers raced on one session; the operation gave up.
    #[error("session {0:?} is too contended: gave up after repeated version conflicts")]
    Contended(String),
    /// The stored log does not fold: corruption, or written by a newer version.
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
    /// The GraphQL `extensions.code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadConfiguration(_) => "BAD_CONFIGURATION",
            Error::BadInput(_) => "BAD_INPUT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::InvalidState(_) => "INVALID_STATE",
            Error::Conflict(_) | Error::Contended(_) => "CONFLICT",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::Corrupt(_) | Error::Store(_) => "INTERNAL",
        }
    }

    /// Whether the message is safe and useful to show a client (internal errors are
    /// logged with their cause instead).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Error::Corrupt(_) | Error::Store(_))
    }
}

impl From<DomainError> for Error {
    fn from(err: DomainError) -> Self {
        match err {
            DomainError::BadConfiguration(m) => Error::BadConfiguration(m),
            DomainError::BadInput(m) => Error::BadInput(m),
            DomainError::NotFound(m) => Error::NotFound(m),
            DomainError::InvalidState(m) => Error::InvalidState(m),
            DomainError::Corrupt(m) => Error::Corrupt(m),
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt(m) => Error::Corrupt(m),
            StoreError::LeaseLost { session, instance } => Error::Conflict(format!(
                "the lease on instance {instance:?} of session {session:?} expired or was claimed by another worker"
            )),
            StoreError::BadUrl(url) => Error::BadInput(StoreError::BadUrl(url).to_string()),
            // Opening failed: the message names the database and what to check.
            err @ StoreError::CannotOpen { .. } => Error::Store(err),
            other if other.is_transient() => Error::Unavailable(other),
            other => Error::Store(other),
        }
    }
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

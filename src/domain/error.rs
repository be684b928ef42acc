//! Errors of the pure domain: a rule said no. Each maps to one GraphQL error code.

/// Why a command was refused. Nothing is written when a command fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// `configure` was given a configuration it cannot accept.
    #[error("{0}")]
    BadConfiguration(String),
    /// Kwargs, results or metadata that are not JSON objects; empty names.
    #[error("{0}")]
    BadInput(String),
    /// An unknown task or instance.
    #[error("{0}")]
    NotFound(String),
    /// The instance is not in a status that allows the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A stored event does not fit the state it is applied to: the log is corrupt
    /// or was written by a newer version.
    #[error("event log is inconsistent: {0}")]
    Corrupt(String),
}

impl DomainError {
    /// What was refused and why, without the kind's prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::BadConfiguration(message)
            | Self::BadInput(message)
            | Self::NotFound(message)
            | Self::InvalidState(message)
            | Self::Corrupt(message) => message,
        }
    }
}

//! How a store is opened: the settings of each backend, typed, with their
//! defaults. The caller (the CLI, from flags and environment variables) parses
//! them once; the store never reads the environment.

use std::time::Duration;

/// The settings of both backends (each store uses its own half).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreOptions {
    /// For `sqlite:` URLs.
    pub sqlite: SqliteOptions,
    /// For `postgres://` URLs.
    pub postgres: PostgresOptions,
}

/// SQLite's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteOptions {
    /// The `synchronous` pragma: `Full` (the default: every commit durable),
    /// `Normal` (durable up to the last checkpoint on power loss) or `Off`.
    pub synchronous: Synchronous,
    /// How long a writer waits, first for this process's other writers, then
    /// for SQLite's write lock (another process), before it fails as busy.
    pub busy_timeout: Duration,
    /// Most decisions committed in one transaction (1: each alone).
    pub max_group: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_group: DEFAULT_MAX_GROUP,
        }
    }
}

/// PostgreSQL's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresOptions {
    /// Connections in the pool (one writes at a time; the rest serve reads).
    pub pool_size: u32,
    /// Most decisions committed in one transaction (1: each alone).
    pub max_group: usize,
    /// How long a request waits for a connection, or a writer for its turn,
    /// before it fails as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            max_group: DEFAULT_MAX_GROUP,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Most decisions in one transaction unless configured (bounds the latency of
/// the first of a group).
pub const DEFAULT_MAX_GROUP: usize = 64;

/// SQLite's `synchronous` pragma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// No fsync at all.
    Off,
    /// fsync at checkpoints (WAL).
    Normal,
    /// fsync at every commit.
    Full,
}

impl std::str::FromStr for Synchronous {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_uppercase().as_str() {
            "" | "FULL" => Ok(Synchronous::Full),
            "NORMAL" => Ok(Synchronous::Normal),
            "OFF" => Ok(Synchronous::Off),
            _ => Err(format!("{text:?}: expected NORMAL, FULL or OFF")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Synchronous;

    #[test]
    fn synchronous_modes_parse_in_any_case_and_nothing_else_does() {
        assert_eq!("normal".parse(), Ok(Synchronous::Normal));
        assert_eq!("FULL".parse(), Ok(Synchronous::Full));
        assert_eq!(" off ".parse(), Ok(Synchronous::Off));
        assert!("EXTRA".parse::<Synchronous>().is_err());
    }
}

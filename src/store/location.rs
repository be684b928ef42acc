//! Where a database URL points, for people: the absolute path of a SQLite
//! file, a URL with its password hidden, and what to check when a database
//! cannot be opened.
//!
//! Drivers report `unable to open database file` or `Connection refused`
//! without saying which file or server; [`explain`] turns a failure to open
//! into [`StoreError::CannotOpen`], which names the file (or the server) and
//! the likely cause.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use super::StoreError;

/// The absolute path of the SQLite file `url` names; `None` for an in-memory
/// database or a URL that is not SQLite.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
}

/// `url` with any password replaced by `***`, for logs and messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Wraps a failure to open (connect to or migrate) the database at `url` with
/// what it is and what to check. Configuration errors of our own (a bad URL,
/// a bad tuning variable) are left as they are: they say so already.
pub(super) fn explain(url: &str, err: StoreError) -> StoreError {
    if !matches!(err, StoreError::Backend(_) | StoreError::Migrate(_)) {
        return err;
    }
    let message = err.to_string();
    let (target, hint) = match sqlite_file(url) {
        Some(path) => (
            format!("the SQLite database {}", path.display()),
            sqlite_hint(&path, &message),
        ),
        None if url.starts_with("sqlite:") => ("the SQLite database".to_owned(), String::new()),
        None => (
            format!("the PostgreSQL database {}", redact(url)),
            postgres_hint(&err, &message),
        ),
    };
    StoreError::CannotOpen {
        target,
        hint,
        source: Box::new(err),
    }
}

fn sqlite_hint(path: &Path, message: &str) -> String {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if message.contains("not a database") {
        return format!("{} exists but is not a SQLite database", path.display());
    }
    if path.is_dir() {
        return format!("{} is a directory, not a database file", path.display());
    }
    if !dir.exists() {
        return format!(
            "the directory {} does not exist (a missing database file is created, but not its directory)",
            dir.display()
        );
    }
    if !dir.is_dir() {
        return format!("{} is not a directory", dir.display());
    }
    let read_only_dir = std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly());
    if !path.exists() && read_only_dir {
        return format!(
            "the directory {} is not writable, so the database file cannot be created there",
            dir.display()
        );
    }
    format!(
        "check that this user can read and write {} and its directory (SQLite also writes {}-wal and {}-shm beside it)",
        path.display(),
        path.display(),
        path.display()
    )
}

fn postgres_hint(err: &StoreError, message: &str) -> String {
    let refused = matches!(err, StoreError::Backend(sqlx::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused)
        || message.contains("Connection refused");
    if refused {
        "connection refused: is PostgreSQL running and listening at that host and port?".to_owned()
    } else if matches!(err, StoreError::Backend(sqlx::Error::PoolTimedOut)) {
        "no connection could be made in time: is PostgreSQL running and listening at that host and port, and are the user, password and database right?".to_owned()
    } else if message.contains("password authentication failed") || message.contains("no password")
    {
        "check the user name and password in the URL".to_owned()
    } else if message.contains("does not exist") {
        "the database (or role) named in the URL does not exist: create it first, e.g. with createdb".to_owned()
    } else {
        "check the host, port, database name and credentials in the URL".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/triggers?sslmode=require"),
            "postgres://app:***@db:5432/triggers?sslmode=require"
        );
        assert_eq!(
            redact("postgres://app@db/triggers"),
            "postgres://app@db/triggers"
        );
        assert_eq!(redact("sqlite://triggers.db"), "sqlite://triggers.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn sqlite_urls_name_absolute_files() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            sqlite_file("sqlite://triggers.db"),
            Some(here.join("triggers.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/t.db"),
            Some(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/t"), None);
    }
}

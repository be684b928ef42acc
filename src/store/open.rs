//! Opening a store from a database URL: picks the backend by scheme, connects
//! and brings the schema up to date.

use std::sync::Arc;

use super::location;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{Store, StoreError, StoreOptions, StoreResult};

/// Opens the store at `url` with default [`StoreOptions`] (see [`open_with`]).
///
/// # Errors
/// As [`open_with`].
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the store at `url`, creating a missing SQLite file and running any
/// pending migrations.
///
/// - `sqlite::memory:`: a private in-memory database (one connection).
/// - `sqlite://relative.db`, `sqlite:///abs/path.db`, `sqlite:path`: a file, in
///   WAL mode, with `options.sqlite` (synchronous mode, busy timeout, group
///   size; see [`SqliteStore::connect`]).
/// - `postgres://...`, `postgresql://...`: a pool sized by `options.postgres`
///   (see [`PostgresStore::connect`]).
///
/// # Errors
/// [`StoreError::BadUrl`] for any other scheme; otherwise what connecting or
/// migrating fails with, as [`StoreError::CannotOpen`] (naming the file or
/// server and the likely cause).
pub async fn open_with(url: &str, options: &StoreOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url, &options.sqlite)
            .await
            .map_err(|err| location::explain(url, err))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, &options.postgres)
            .await
            .map_err(|err| location::explain(url, err))?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}

//! Opening a store from a database URL: picks the backend by scheme, connects
//! and brings the schema up to date.

use std::sync::Arc;

use super::location;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{Store, StoreError, StoreResult};

/// Opens the store at `url`, creating a missing SQLite file and running any
/// pending migrations.
///
/// - `sqlite::memory:`: a private in-memory database (one connection).
/// - `sqlite://relative.db`, `sqlite:///abs/path.db`, `sqlite:path`: a file, in
///   WAL mode; `TRIGGERS_SQLITE_SYNCHRONOUS` (`NORMAL`, `FULL`, `OFF`; default
///   `FULL`) trades durability for speed (see [`SqliteStore::connect`]).
/// - `postgres://...`, `postgresql://...`: a pool of `TRIGGERS_PG_POOL_SIZE`
///   connections (default 16; see [`PostgresStore::connect`]).
///
/// # Errors
/// [`StoreError::BadUrl`] for any other scheme; otherwise what connecting or
/// migrating fails with, as [`StoreError::CannotOpen`] (naming the file or
/// server and the likely cause).
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .map_err(|err| location::explain(url, err))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url)
            .await
            .map_err(|err| location::explain(url, err))?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}

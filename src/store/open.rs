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

/// How long a pooled connection may sit idle before it is checked (a ping)
/// on its way out of the pool.
const CHECK_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Both backends' pools check a connection before handing it out only when it
/// has been idle a while. sqlx's default checks every one: a ping per
/// acquire, which is one more round trip to PostgreSQL, or one more hop to a
/// SQLite connection's thread, on every statement outside a transaction and
/// every commit (a commit on a busy server takes a connection that was idle
/// for microseconds). A connection that fails its check is dropped and
/// another is taken; a connection that broke while in use fails the call that
/// finds it, as it would with the default.
pub(super) fn checked_when_idle<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

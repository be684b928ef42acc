//! The commands that open the database: `serve` and `rebuild`.

use std::time::Duration;

use tokio::net::TcpListener;

use super::output::count;
use super::signals;
use super::{CliError, RebuildArgs, ServeArgs};
use crate::engine::EngineOptions;
use crate::http::{self, ServerConfig};
use crate::store::{redact, sqlite_file};
use crate::Engine;

/// `triggers serve`: open (and migrate) the database, serve until Ctrl-C or
/// SIGTERM, then stop gracefully.
pub(super) async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let shutdown = shutdown_signal();
    // The port first: a second server on a port in use fails at once, before
    // it opens (and perhaps creates or migrates) a database.
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| CliError::Io {
            context: format!("cannot listen on {}", args.listen),
            source,
        })?;
    let url = &args.database.database_url;
    tracing::info!(database = %redact(url), "opening the database");
    let options = EngineOptions {
        inline_lease: Duration::from_secs(args.inline_lease_seconds),
        ..EngineOptions::default()
    };
    let file = sqlite_file(url);
    let existed = file.as_ref().is_some_and(|path| path.exists());
    let engine = Engine::builder(url.clone())
        .options(options)
        .store_options(args.database.store_options())
        .open()
        .await?;
    if let Some(path) = &file {
        let what = if existed { "opened" } else { "created" };
        tracing::info!(path = %path.display(), "{what} the SQLite database file");
    }
    let config = ServerConfig {
        api_token: args.api_token.filter(|t| !t.is_empty()),
        max_body_bytes: args.max_body_bytes,
        ..ServerConfig::default()
    };
    if config.api_token.is_some() {
        tracing::info!("an API token is required on /graphql");
    }
    http::serve(engine.clone(), listener, config, shutdown)
        .await
        .map_err(|source| CliError::Io {
            context: "the server failed".into(),
            source,
        })?;
    engine
        .shutdown(Duration::from_secs(args.shutdown_timeout))
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// `triggers rebuild`: recompute every projection from the log.
pub(super) async fn rebuild(args: RebuildArgs) -> Result<(), CliError> {
    let url = &args.database.database_url;
    if let Some(path) = sqlite_file(url).filter(|path| !path.exists()) {
        return Err(CliError::Usage(format!(
            "there is no database at {} (from {}): rebuild reads an existing event log, so point --database-url (or TRIGGERS_DATABASE_URL) at it",
            path.display(),
            redact(url)
        )));
    }
    tracing::info!(database = %redact(url), "rebuilding projections from the event log");
    // A maintenance run: it must not run jobs or expire leases while it works.
    let options = EngineOptions {
        recover_on_open: false,
        sweep_interval: None,
        ..EngineOptions::default()
    };
    let engine = Engine::builder(url.clone())
        .options(options)
        .store_options(args.database.store_options())
        .open()
        .await?;
    let report = engine.rebuild().await?;
    let seconds = report.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        report.events as f64 / seconds
    } else {
        0.0
    };
    println!(
        "rebuilt {} from {}: {}, {} queued, in {:.3} s ({:.0} events/s)",
        count(report.sessions as usize, "session"),
        count(report.events as usize, "event"),
        count(report.instances as usize, "instance"),
        report.queued,
        seconds,
        rate
    );
    Ok(())
}

/// Resolves on the first Ctrl-C (or SIGTERM on Unix), listening from now on.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let signals = signals::listen();
    async move {
        match signals {
            Ok(mut count) => {
                let _ = count.wait_for(|n| *n > 0).await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for signals; stop the server with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

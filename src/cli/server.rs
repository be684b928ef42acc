//! The commands that open the database: `serve` and `rebuild`.

use std::time::Duration;

use tokio::net::TcpListener;

use super::{CliError, RebuildArgs, ServeArgs};
use crate::engine::EngineOptions;
use crate::http::{self, ServerConfig};
use crate::Engine;

/// `triggers serve`: open (and migrate) the database, serve until Ctrl-C or
/// SIGTERM, then stop gracefully.
pub(super) async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let shutdown = shutdown_signal();
    let url = &args.database.database_url;
    tracing::info!(database = %redact(url), "opening the database");
    let options = EngineOptions {
        inline_lease: Duration::from_secs(args.inline_lease_seconds),
        ..EngineOptions::default()
    };
    let engine = Engine::builder(url.clone())
        .options(options)
        .store_options(args.database.store_options())
        .open()
        .await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| CliError::Io {
            context: format!("cannot listen on {}", args.listen),
            source,
        })?;
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
        "rebuilt {} sessions from {} events: {} instances, {} queued, in {:.3} s ({:.0} events/s)",
        report.sessions, report.events, report.instances, report.queued, seconds, rate
    );
    Ok(())
}

/// Resolves on Ctrl-C, or SIGTERM on Unix. The handlers are installed at once
/// (not at the first poll), so a signal that arrives while the server starts is
/// a graceful stop too, not the default "terminate now".
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot listen for signals; stop the server with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("Ctrl-C received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The URL with any password replaced, for logs.
fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::redact;

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
}

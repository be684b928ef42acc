//! The `triggers` command line (docs/cli.md).
//!
//! Two kinds of commands:
//! - `serve`, `rebuild` and the operator's `export`, `import`, `copy` and
//!   `purge` open the database themselves (`--database-url`).
//! - `configure`, `fire`, `show` and `events` are clients of a running server:
//!   they send GraphQL over HTTP to `--server`, so they work against any
//!   deployment and go through the same rules, limits and token as every client.
//!
//! Every flag has an environment variable fallback, shown in `--help`.

mod client;
mod loadgen;
mod ops;
mod output;
mod remote;
mod server;
mod signals;
mod work;

pub use loadgen::LoadgenArgs;
pub use ops::{CopyArgs, ExportArgs, ImportArgs, PurgeArgs};
pub use work::WorkArgs;

use clap::{Args, Parser, Subcommand};

use crate::engine;

/// Run tasks once the right set of events has happened, per session, on an
/// event-sourced log (SQLite or PostgreSQL).
#[derive(Debug, Parser)]
#[command(name = "triggers", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API (POST/GET /graphql, GraphiQL, subscriptions) and /health.
    Serve(ServeArgs),
    /// Recompute every projection (instances, queue, snapshots) from the event log
    /// alone, and print what was done.
    Rebuild(RebuildArgs),
    /// Write the event log (or chosen sessions) as JSON Lines, one event a line.
    Export(ExportArgs),
    /// Append the events of an export; sessions that already hold them get
    /// only the newer ones, and their projections are rebuilt.
    Import(ImportArgs),
    /// Copy every event from one database to another (export piped into
    /// import; can be interrupted and run again).
    Copy(CopyArgs),
    /// Remove whole resolved sessions older than a date, recorded in the
    /// `purges` table.
    Purge(PurgeArgs),
    /// Add or replace tasks of a session from a JSON file (talks to a server).
    Configure(ConfigureArgs),
    /// Fire a trigger in a session (talks to a server).
    Fire(FireArgs),
    /// Show a session's tasks and instances with their status, result or error
    /// (talks to a server).
    Show(ShowArgs),
    /// Print a session's timeline: seq, time, kind, instance/trigger, causedBy
    /// (talks to a server).
    Events(EventsArgs),
    /// Run a program once per claimed worker task: the task as JSON on stdin, the
    /// result as a JSON object on stdout (talks to a server).
    Work(WorkArgs),
    /// Drive a server with concurrent clients firing into questionnaire sessions,
    /// for a while, and print fires/s and latency percentiles (talks to a server).
    Loadgen(LoadgenArgs),
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://triggers.db` (relative to the working directory,
    /// created if missing), `sqlite:///abs/path.db`, `sqlite::memory:`, or
    /// `postgres://user:password@host/db`.
    #[arg(
        long,
        env = "TRIGGERS_DATABASE_URL",
        default_value = "sqlite://triggers.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// SQLite's `synchronous` mode: FULL (every commit durable), NORMAL (durable
    /// up to the last checkpoint on power loss; faster) or OFF.
    #[arg(
        long,
        env = "TRIGGERS_SQLITE_SYNCHRONOUS",
        hide_env_values = true,
        default_value = "FULL"
    )]
    pub sqlite_synchronous: crate::store::Synchronous,
    /// How long a SQLite writer waits for the write lock before failing as busy,
    /// in milliseconds.
    #[arg(long, env = "TRIGGERS_SQLITE_BUSY_TIMEOUT_MS", hide_env_values = true, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sqlite_busy_timeout_ms: u64,
    /// Most SQLite decisions committed in one transaction (1: each alone).
    #[arg(long, env = "TRIGGERS_SQLITE_MAX_GROUP", hide_env_values = true,
          default_value_t = crate::store::DEFAULT_MAX_GROUP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub sqlite_max_group: usize,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "TRIGGERS_PG_POOL_SIZE", hide_env_values = true, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pg_pool_size: u32,
    /// Most PostgreSQL decisions committed in one transaction (1: each alone).
    #[arg(long, env = "TRIGGERS_PG_MAX_GROUP", hide_env_values = true,
          default_value_t = crate::store::DEFAULT_MAX_GROUP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub pg_max_group: usize,
}

impl DatabaseArgs {
    /// The store's settings these flags give.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        use crate::store::{PostgresOptions, SqliteOptions, StoreOptions};
        StoreOptions {
            sqlite: SqliteOptions {
                synchronous: self.sqlite_synchronous,
                busy_timeout: std::time::Duration::from_millis(self.sqlite_busy_timeout_ms),
                max_group: self.sqlite_max_group,
            },
            postgres: PostgresOptions {
                pool_size: self.pg_pool_size,
                max_group: self.pg_max_group,
                ..PostgresOptions::default()
            },
        }
    }
}

/// `triggers serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address to listen on (`host:port`; port 0 picks a free one).
    #[arg(
        long,
        env = "TRIGGERS_LISTEN",
        hide_env_values = true,
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// When set, every /graphql request must send `Authorization: Bearer <token>`
    /// (/health excepted).
    #[arg(long, env = "TRIGGERS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Largest request body accepted, in bytes (larger gets HTTP 413).
    #[arg(long, env = "TRIGGERS_MAX_BODY_BYTES", hide_env_values = true, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// On shutdown, how long to wait for inline jobs in flight, in seconds (jobs
    /// still running then are re-run after the next start, when their lease ends).
    #[arg(
        long,
        env = "TRIGGERS_SHUTDOWN_TIMEOUT",
        hide_env_values = true,
        default_value_t = 10
    )]
    pub shutdown_timeout: u64,
    /// Lease of an inline job, in seconds, renewed while it runs. When a server
    /// dies, its inline jobs are re-run (by any server on the database) once
    /// their lease has ended.
    #[arg(long, env = "TRIGGERS_INLINE_LEASE", hide_env_values = true, default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub inline_lease_seconds: u64,
}

/// `triggers rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// How to reach a running server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the triggers server.
    #[arg(
        long,
        env = "TRIGGERS_SERVER",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// API token, when the server requires one.
    #[arg(long, env = "TRIGGERS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `triggers configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The session UID.
    pub session: String,
    /// A JSON file of task name -> directives (`-` reads standard input).
    pub file: String,
    /// Refuse unknown directives instead of keeping them as extras with a
    /// warning.
    #[arg(long)]
    pub strict: bool,
}

/// `triggers fire`.
#[derive(Debug, Args)]
pub struct FireArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The session UID.
    pub session: String,
    /// The trigger name.
    pub trigger: String,
    /// Kwargs, a JSON object.
    #[arg(long, default_value = "{}")]
    pub kwargs: String,
    /// Makes the fire safe to retry: a repeat with the same key appends nothing.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `triggers show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The session UID.
    pub session: String,
    /// Print the session as JSON (tasks, and instances with their kwargs,
    /// metadata and result), for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `triggers events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The session UID.
    pub session: String,
    /// Only events with seq greater than this.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine refused or failed (`serve`, `rebuild`).
    #[error("{0}")]
    Engine(#[from] engine::Error),
    /// A file, the listener or the server socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be reached, or did not answer with GraphQL.
    #[error("{context}: {message}")]
    Http {
        /// What was being done.
        context: String,
        /// The failure.
        message: String,
    },
    /// The server answered with a GraphQL error.
    #[error("{message} ({code})")]
    Api {
        /// `extensions.code`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// An operator command failed (`export`, `import`, `copy`, `purge`).
    #[error("{0}")]
    Ops(#[from] crate::ops::OpsError),
}

/// Starts logs on stderr, filtered by `RUST_LOG` (default `info`), in the
/// format `TRIGGERS_LOG_FORMAT` names: `text` (the default: readable lines,
/// coloured on a terminal) or `json` (one JSON object per line, with the
/// fields of the spans it happened in: request id, session, instance).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("TRIGGERS_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "json" => {
            let _ = builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .try_init();
        }
        other => {
            let _ = builder
                .with_ansi(std::io::stderr().is_terminal())
                .try_init();
            if !matches!(other, "" | "text") {
                tracing::warn!(
                    "TRIGGERS_LOG_FORMAT={format:?} is not `text` or `json`; logging as text"
                );
            }
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => server::serve(args).await,
        Command::Rebuild(args) => server::rebuild(args).await,
        Command::Export(args) => ops::export(args).await,
        Command::Import(args) => ops::import(args).await,
        Command::Copy(args) => ops::copy(args).await,
        Command::Purge(args) => ops::purge(args).await,
        Command::Configure(args) => remote::configure(args).await,
        Command::Fire(args) => remote::fire(args).await,
        Command::Show(args) => remote::show(args).await,
        Command::Events(args) => remote::events(args).await,
        Command::Work(args) => work::work(args).await,
        Command::Loadgen(args) => loadgen::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_names_environment_variables_without_a_dangling_equals_sign() {
        let mut root = Cli::command();
        root.build();
        for command in root.get_subcommands_mut() {
            let help = command.render_long_help().to_string();
            assert!(!help.contains("=]"), "{}:\n{help}", command.get_name());
            if command.get_name() == "show" {
                assert!(help.contains("[env: TRIGGERS_SERVER]"), "{help}");
            }
        }
    }

    #[test]
    fn serve_defaults_to_a_local_sqlite_file_and_port_8080() {
        let cli = Cli::try_parse_from(["triggers", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        // The environment of the test run may set these; only check the defaults
        // when it does not.
        if std::env::var_os("TRIGGERS_DATABASE_URL").is_none() {
            assert_eq!(args.database.database_url, "sqlite://triggers.db");
        }
        if std::env::var_os("TRIGGERS_LISTEN").is_none() {
            assert_eq!(args.listen, "127.0.0.1:8080");
        }
    }

    #[test]
    fn store_flags_become_the_store_options_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "triggers",
            "rebuild",
            "--sqlite-synchronous",
            "normal",
            "--sqlite-busy-timeout-ms",
            "250",
            "--sqlite-max-group",
            "1",
            "--pg-pool-size",
            "3",
            "--pg-max-group",
            "8",
        ])
        .unwrap();
        let Command::Rebuild(args) = cli.command else {
            panic!("expected rebuild");
        };
        let options = args.database.store_options();
        assert_eq!(
            options.sqlite.synchronous,
            crate::store::Synchronous::Normal
        );
        assert_eq!(
            options.sqlite.busy_timeout,
            std::time::Duration::from_millis(250)
        );
        assert_eq!(options.sqlite.max_group, 1);
        assert_eq!(options.postgres.pool_size, 3);
        assert_eq!(options.postgres.max_group, 8);
        for bad in [
            ["--sqlite-synchronous", "EXTRA"],
            ["--sqlite-busy-timeout-ms", "0"],
            ["--sqlite-max-group", "0"],
            ["--pg-pool-size", "0"],
        ] {
            let parsed = Cli::try_parse_from(["triggers", "rebuild", bad[0], bad[1]]);
            assert!(parsed.is_err(), "{bad:?} was accepted");
        }
    }
}

//! The operator's commands over a database: `export`, `import`, `copy` and
//! `purge` (docs/operations.md). The work is done in [`crate::ops`]; this
//! module opens the databases, the files and the terminal.

use std::io::Write;
use std::sync::Arc;

use clap::Args;

use super::{CliError, DatabaseArgs};
use crate::engine::EngineOptions;
use crate::ops::export::{self, Pages};
use crate::ops::progress::Progress;
use crate::ops::{copy, import, purge, OpsError};
use crate::store::{self, redact, sqlite_file, Store, StoreOptions};
use crate::Engine;

/// `triggers export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only these sessions (`--session a b`, or the flag repeated); all of
    /// them when absent.
    #[arg(long = "session", value_name = "UID", num_args = 1..)]
    pub sessions: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// `triggers import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A JSON Lines file from `triggers export` (`-` reads standard input).
    pub file: String,
}

/// `triggers copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The database to read (`sqlite://...` or `postgres://...`).
    #[arg(long, env = "TRIGGERS_COPY_FROM", hide_env_values = true)]
    pub from: String,
    /// The database to append to (created if it is a missing SQLite file).
    #[arg(long, env = "TRIGGERS_COPY_TO", hide_env_values = true)]
    pub to: String,
}

/// `triggers purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Remove sessions whose every instance is resolved and whose last event
    /// is older than this: a date (`2026-01-31`, midnight UTC) or an RFC 3339
    /// time.
    #[arg(long, value_name = "DATE")]
    pub resolved_before: String,
    /// First write the sessions to purge to this file, as `export` would.
    #[arg(long, value_name = "FILE")]
    pub export: Option<std::path::PathBuf>,
    /// List what would be purged; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Who is purging, as recorded in the `purges` table (default: the
    /// operating-system user).
    #[arg(long, env = "TRIGGERS_PURGED_BY", hide_env_values = true)]
    pub by: Option<String>,
}

/// Refuses a SQLite URL whose file does not exist (it would be created empty).
fn existing(url: &str, what: &str) -> Result<(), CliError> {
    if let Some(path) = sqlite_file(url).filter(|path| !path.exists()) {
        return Err(CliError::Usage(format!(
            "there is no database at {} (from {}): {what} reads an existing event log",
            path.display(),
            redact(url)
        )));
    }
    Ok(())
}

async fn open_store(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, CliError> {
    Ok(store::open_with(url, options)
        .await
        .map_err(crate::engine::Error::from)?)
}

/// An engine for maintenance: it runs no job and expires no lease, and keeps
/// few states in memory (an import touches each session once).
async fn open_engine(url: &str, options: StoreOptions) -> Result<Engine, CliError> {
    let engine_options = EngineOptions {
        recover_on_open: false,
        sweep_interval: None,
        cache_capacity: 64,
        ..EngineOptions::default()
    };
    Ok(Engine::builder(url.to_owned())
        .options(engine_options)
        .store_options(options)
        .open()
        .await?)
}

fn create(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>, CliError> {
    let file = std::fs::File::create(path).map_err(|source| CliError::Io {
        context: format!("cannot create {}", path.display()),
        source,
    })?;
    Ok(std::io::BufWriter::with_capacity(1 << 20, file))
}

/// `triggers export`: the log (or chosen sessions) as JSON Lines.
pub(super) async fn export(args: ExportArgs) -> Result<(), CliError> {
    let url = &args.database.database_url;
    existing(url, "export")?;
    let store = open_store(url, &args.database.store_options()).await?;
    // Each session once, in the order given.
    let mut seen = std::collections::HashSet::new();
    let sessions: Vec<String> = args
        .sessions
        .iter()
        .filter(|s| seen.insert(s.as_str()))
        .cloned()
        .collect();
    if !sessions.is_empty() {
        let versions = store
            .admin()
            .versions(&sessions)
            .await
            .map_err(OpsError::from)?;
        let missing: Vec<&String> = sessions
            .iter()
            .zip(&versions)
            .filter(|(_, v)| **v == 0)
            .map(|(s, _)| s)
            .collect();
        if !missing.is_empty() {
            return Err(CliError::Usage(format!(
                "no session {} in {}: nothing was exported",
                missing
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                redact(url)
            )));
        }
    }
    let pages = if sessions.is_empty() {
        Pages::all(store.as_ref())
    } else {
        Pages::of(store.as_ref(), &sessions)
    };
    let mut progress = Progress::on_terminal();
    let report = match &args.output {
        Some(path) => export::export(pages, &mut create(path)?, &mut progress).await?,
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            export::export(pages, &mut out, &mut progress).await?
        }
    };
    eprintln!("{}", report.summary());
    Ok(())
}

/// `triggers import`: appends an export's events, then rebuilds their sessions.
pub(super) async fn import(args: ImportArgs) -> Result<(), CliError> {
    // The input first: a file that is not there creates no database.
    let input: Box<dyn tokio::io::AsyncBufRead + Unpin + Send> = if args.file == "-" {
        Box::new(tokio::io::BufReader::with_capacity(
            1 << 20,
            tokio::io::stdin(),
        ))
    } else {
        let file = tokio::fs::File::open(&args.file)
            .await
            .map_err(|source| CliError::Io {
                context: format!("cannot open {}", args.file),
                source,
            })?;
        Box::new(tokio::io::BufReader::with_capacity(1 << 20, file))
    };
    let engine = open_engine(&args.database.database_url, args.database.store_options()).await?;
    let report = import::import_lines(&engine, input, Progress::on_terminal()).await?;
    println!("{}", report.summary("imported"));
    if !report.refused.is_empty() {
        return Err(OpsError::Refused(report.refused).into());
    }
    Ok(())
}

/// `triggers copy`: every event from one database into another.
pub(super) async fn copy(args: CopyArgs) -> Result<(), CliError> {
    if args.from == args.to {
        return Err(CliError::Usage(
            "--from and --to name the same database: nothing to copy".into(),
        ));
    }
    existing(&args.from, "copy")?;
    let from = open_store(&args.from, &StoreOptions::default()).await?;
    let to = open_engine(&args.to, StoreOptions::default()).await?;
    let report = copy::copy(from, &to, Progress::on_terminal()).await?;
    println!(
        "{} (from {} to {})",
        report.summary("copied"),
        redact(&args.from),
        redact(&args.to)
    );
    if !report.refused.is_empty() {
        return Err(OpsError::Refused(report.refused).into());
    }
    Ok(())
}

/// `triggers purge`: retention, recorded in `purges`.
pub(super) async fn purge(args: PurgeArgs) -> Result<(), CliError> {
    let before = purge::parse_cutoff(&args.resolved_before)?;
    let url = &args.database.database_url;
    existing(url, "purge")?;
    let store = open_store(url, &args.database.store_options()).await?;
    let candidates = purge::candidates(store.as_ref(), before).await?;
    let events: u64 = candidates.iter().map(|c| c.version).sum();
    let cutoff = crate::domain::state::timestamp(before);
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for c in &candidates {
            let last = crate::domain::state::timestamp(c.updated_at);
            let _ = writeln!(
                out,
                "would purge {}  ({} events, last at {last})",
                c.session, c.version
            );
        }
        let export = args.export.as_ref().map_or_else(String::new, |p| {
            format!(", after writing them to {}", p.display())
        });
        let _ = writeln!(
            out,
            "dry run: would purge {} ({}) resolved before {cutoff}{export}; nothing was changed",
            crate::ops::count(candidates.len() as u64, "session"),
            crate::ops::count(events, "event"),
        );
        return Ok(());
    }
    if let Some(path) = &args.export {
        let uids: Vec<String> = candidates.iter().map(|c| c.session.clone()).collect();
        let mut file = create(path)?;
        let written = export::export(
            Pages::of(store.as_ref(), &uids),
            &mut file,
            &mut Progress::hidden(),
        )
        .await?;
        file.get_ref().sync_all().map_err(|source| CliError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })?;
        println!("{} to {}", written.summary(), path.display());
    }
    let by = args.by.clone().unwrap_or_else(purge::current_user);
    let report = purge::purge(store.as_ref(), candidates, before, &by).await?;
    println!(
        "purged {} ({}) resolved before {cutoff}, recorded in purges by {by:?} in {:.3} s",
        crate::ops::count(report.sessions.len() as u64, "session"),
        crate::ops::count(report.events(), "event"),
        report.elapsed.as_secs_f64()
    );
    if !report.kept.is_empty() {
        println!(
            "kept {} that changed while purging: {}",
            crate::ops::count(report.kept.len() as u64, "session"),
            report.kept.join(", ")
        );
    }
    Ok(())
}

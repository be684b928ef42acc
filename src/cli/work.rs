//! `triggers work`: a generic external worker that turns any program into a task.
//!
//! It claims instances of one queue over GraphQL (docs/graphql.md, "Workers"), runs
//! COMMAND once per claim with the task as a JSON document on standard input,
//! renews the lease while COMMAND runs, and reports the outcome:
//! - exit status 0 and a JSON object on standard output: `completeTask` with that
//!   object as the result;
//! - any other exit, or standard output that is not one JSON object: `failTask`
//!   with the tail of standard error as the error.
//!
//! On Ctrl-C or SIGTERM it stops claiming and waits for the commands it runs, up
//! to `--shutdown-timeout`; commands still running then are killed without a
//! report, so their leases expire and another worker runs them again
//! (at-least-once). A second signal stops at once, the same way.
//!
//! - this file: the flags, the claim loop, heartbeats and reports;
//! - `command.rs`: running COMMAND once and judging what it did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::client::Client;
use super::signals;
use super::{CliError, ServerArgs};

mod command;

use crate::engine::Claim;
use command::{execute, CommandOutcome};

/// First pause when the queue is empty; it doubles up to `--max-poll-interval`.
const FIRST_POLL: Duration = Duration::from_millis(100);
/// How often a report that could not reach the server is tried.
const REPORT_ATTEMPTS: u32 = 5;

/// `triggers work`.
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The queue to claim from (`worker:<queue>` tasks); `default` when absent.
    #[arg(long, env = "TRIGGERS_QUEUE", hide_env_values = true)]
    pub queue: Option<String>,
    /// How many tasks run at once (one COMMAND process each).
    #[arg(long, env = "TRIGGERS_CONCURRENCY", hide_env_values = true, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub concurrency: u32,
    /// The worker's name, recorded in each `InstanceStarted` event (default:
    /// `<hostname>:<pid>`).
    #[arg(long, env = "TRIGGERS_WORKER", hide_env_values = true)]
    pub worker: Option<String>,
    /// Lease asked for each claim, in seconds (1..3600); renewed every third of it
    /// while COMMAND runs.
    #[arg(long, env = "TRIGGERS_LEASE_SECONDS", hide_env_values = true, default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub lease_seconds: u32,
    /// Longest pause between two claims while the queue is empty, in seconds.
    #[arg(
        long,
        env = "TRIGGERS_MAX_POLL_INTERVAL",
        hide_env_values = true,
        default_value_t = 2.0
    )]
    pub max_poll_interval: f64,
    /// On Ctrl-C or SIGTERM, how long to wait for running commands, in seconds;
    /// those still running then are killed and re-run elsewhere once their lease
    /// expires.
    #[arg(
        long,
        env = "TRIGGERS_SHUTDOWN_TIMEOUT",
        hide_env_values = true,
        default_value_t = 30
    )]
    pub shutdown_timeout: u64,
    /// The program to run for each task, and its arguments (after `--`). It reads
    /// `{"session","instance","run","kwargs","attempt"}` on standard input and
    /// prints the result object on standard output.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

const CLAIM: &str = "mutation($worker: String!, $queue: String, $max: Int, $lease: Int) {
  claimTasks(worker: $worker, queue: $queue, max: $max, leaseSeconds: $lease) {
    leaseToken session instance run kwargs attempt leaseExpiresAt
  }
}";
const HEARTBEAT: &str = "mutation($token: String!, $lease: Int) {
  heartbeat(leaseToken: $token, leaseSeconds: $lease)
}";
const COMPLETE: &str = "mutation($token: String!, $result: JSON) {
  completeTask(leaseToken: $token, result: $result) { name status }
}";
const FAIL: &str = "mutation($token: String!, $error: String!, $type: String, $context: JSON) {
  failTask(leaseToken: $token, error: $error, errorType: $type, context: $context) { name status }
}";

/// Everything one task run needs, shared by all of them.
struct Worker {
    client: Client,
    name: String,
    command: Vec<String>,
    lease_seconds: u32,
}

/// `triggers work`: claim, run, report, until Ctrl-C or SIGTERM.
pub(super) async fn work(args: WorkArgs) -> Result<(), CliError> {
    if !(args.max_poll_interval.is_finite() && args.max_poll_interval > 0.0) {
        return Err(CliError::Usage(
            "--max-poll-interval must be a positive number of seconds".into(),
        ));
    }
    // Installed before the first claim, so an early signal is a graceful stop too.
    let stop = signals::listen().map_err(|source| CliError::Io {
        context: "cannot listen for signals".into(),
        source,
    })?;
    let worker = Arc::new(Worker {
        client: Client::new(&args.server)?,
        name: args.worker.clone().unwrap_or_else(default_worker_name),
        command: args.command.clone(),
        lease_seconds: args.lease_seconds,
    });
    tracing::info!(
        worker = %worker.name,
        queue = args.queue.as_deref().unwrap_or("default"),
        concurrency = args.concurrency,
        server = %args.server.server,
        "working"
    );
    let mut running = JoinSet::new();
    let result = claim_loop(&args, &worker, &mut running, stop.clone()).await;
    drain(
        &mut running,
        Duration::from_secs(args.shutdown_timeout),
        stop,
    )
    .await;
    result
}

/// Claims while there is room and no stop was asked for.
async fn claim_loop(
    args: &WorkArgs,
    worker: &Arc<Worker>,
    running: &mut JoinSet<()>,
    mut stop: watch::Receiver<u32>,
) -> Result<(), CliError> {
    let max_poll = Duration::from_secs_f64(args.max_poll_interval);
    let mut idle = FIRST_POLL.min(max_poll);
    loop {
        if *stop.borrow() > 0 {
            return Ok(());
        }
        let free = args.concurrency as usize - running.len();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let claims = worker
            .client
            .request(
                CLAIM,
                json!({
                    "worker": worker.name,
                    "queue": args.queue,
                    "max": free,
                    "lease": args.lease_seconds,
                }),
            )
            .await
            .and_then(|data| {
                serde_json::from_value::<Vec<Claim>>(data["claimTasks"].clone()).map_err(|err| {
                    CliError::Http {
                        context: "the server answered claimTasks unexpectedly".into(),
                        message: err.to_string(),
                    }
                })
            });
        let pause = match claims {
            Ok(claims) if !claims.is_empty() => {
                idle = FIRST_POLL.min(max_poll);
                for claim in claims {
                    let worker = worker.clone();
                    running.spawn(async move { worker.run(claim).await });
                }
                continue;
            }
            Ok(_) => {
                let pause = idle;
                idle = (idle * 2).min(max_poll);
                pause
            }
            // Bad credentials or a bad queue name will not heal by themselves.
            Err(CliError::Api { code, message })
                if code == "UNAUTHORIZED" || code == "BAD_INPUT" =>
            {
                return Err(CliError::Api { code, message });
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim; trying again");
                max_poll
            }
        };
        // Wait for the pause, a task to end (room to claim), or a stop.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            Some(_) = running.join_next() => {}
            _ = stop.changed() => {}
        }
    }
}

/// Waits for the running tasks, up to `timeout` or a second signal; then kills
/// the rest (their leases expire and they run again elsewhere).
async fn drain(running: &mut JoinSet<()>, timeout: Duration, mut stop: watch::Receiver<u32>) {
    if running.is_empty() {
        return;
    }
    tracing::info!(
        tasks = running.len(),
        timeout_seconds = timeout.as_secs(),
        "no more claims; waiting for the running tasks"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            next = running.join_next() => if next.is_none() {
                tracing::info!("every running task reported");
                return;
            },
            _ = tokio::time::sleep_until(deadline) => break,
            changed = stop.changed() => if changed.is_err() || *stop.borrow() > 1 {
                break;
            },
        }
    }
    tracing::warn!(
        tasks = running.len(),
        "stopping with tasks unreported: they run again once their leases expire"
    );
    running.abort_all();
    while running.join_next().await.is_some() {}
}

impl Worker {
    /// Runs COMMAND for one claim, heartbeating meanwhile, and reports.
    async fn run(&self, claim: Claim) {
        let span = tracing::info_span!(
            "task",
            session = %claim.session,
            instance = %claim.instance,
            attempt = claim.attempt
        );
        self.run_claim(claim).instrument(span).await;
    }

    async fn run_claim(&self, claim: Claim) {
        tracing::info!(run = %claim.run, "running");
        let started = Instant::now();
        let outcome = {
            let execute = execute(&self.command, &claim);
            tokio::pin!(execute);
            let every = Duration::from_secs(u64::from(self.lease_seconds)) / 3;
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    outcome = &mut execute => break Some(outcome),
                    _ = beat.tick() => if !self.heartbeat(&claim.lease_token).await {
                        // Dropping `execute` kills the command: its result could
                        // not be recorded anyway, and another worker runs it.
                        break None;
                    },
                }
            }
        };
        let Some(outcome) = outcome else {
            tracing::warn!("the lease was lost; the command was stopped and nothing reported");
            return;
        };
        let elapsed = started.elapsed().as_secs_f64();
        let (query, variables) = match &outcome {
            CommandOutcome::Complete(result) => (
                COMPLETE,
                json!({"token": claim.lease_token, "result": result}),
            ),
            CommandOutcome::Fail {
                error,
                error_type,
                context,
            } => {
                tracing::warn!(error_type, error = %error, "the command failed");
                (
                    FAIL,
                    json!({"token": claim.lease_token, "error": error,
                           "type": error_type, "context": context}),
                )
            }
        };
        match self.report(query, variables).await {
            Ok(()) => tracing::info!(
                seconds = elapsed,
                ok = matches!(outcome, CommandOutcome::Complete(_)),
                "reported"
            ),
            Err(err) => tracing::warn!(
                error = %err,
                "the outcome was not recorded; the task runs again once its lease expires"
            ),
        }
    }

    /// Renews the lease; false when the server refused it (expired or re-claimed).
    async fn heartbeat(&self, token: &str) -> bool {
        match self
            .client
            .request(
                HEARTBEAT,
                json!({"token": token, "lease": self.lease_seconds}),
            )
            .await
        {
            Ok(_) => true,
            Err(CliError::Api { code, message }) if code == "CONFLICT" => {
                tracing::warn!(%message, "the heartbeat was refused");
                false
            }
            Err(err) => {
                // Keep running: the next beat may get through before the lease ends.
                tracing::warn!(error = %err, "cannot renew the lease");
                true
            }
        }
    }

    /// Sends a report, retrying while the server cannot be reached.
    async fn report(&self, query: &str, variables: Value) -> Result<(), CliError> {
        let mut pause = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.client.request(query, variables.clone()).await {
                Ok(_) => return Ok(()),
                Err(err @ CliError::Http { .. }) if attempt < REPORT_ATTEMPTS => {
                    tracing::warn!(error = %err, "cannot report; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// `<hostname>:<pid>`.
fn default_worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_comes_after_a_double_dash() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "triggers",
            "work",
            "--server",
            "http://example:8080",
            "--queue",
            "gpu",
            "--concurrency",
            "4",
            "--",
            "python3",
            "job.py",
            "--verbose",
        ])
        .unwrap();
        let crate::cli::Command::Work(args) = cli.command else {
            panic!("expected work");
        };
        assert_eq!(args.server.server, "http://example:8080");
        assert_eq!(args.queue.as_deref(), Some("gpu"));
        assert_eq!(args.concurrency, 4);
        assert_eq!(args.command, ["python3", "job.py", "--verbose"]);
        assert!(crate::cli::Cli::try_parse_from(["triggers", "work"]).is_err());
        assert!(crate::cli::Cli::try_parse_from([
            "triggers",
            "work",
            "--lease-seconds",
            "0",
            "--",
            "true"
        ])
        .is_err());
    }
}

//! `triggers loadgen`: load on a running server through its real HTTP GraphQL API.
//!
//! Configures `--sessions` sessions with the questionnaire workflow
//! ([`crate::workload`]), then runs `--clients` concurrent clients for
//! `--duration` seconds. Each client has one request in flight at a time and
//! walks its share of the sessions round-robin,
//! firing each one's next step of a respondent's journey (`firstPageReceived`,
//! `pageReceived` x3, `questionnaireComplete`, then around again). Prints fires/s
//! and the latency percentiles of the fire mutation as the client saw them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::client::Client;
use super::{CliError, ServerArgs};
use crate::workload::{questionnaire, JOURNEY};

const CONFIGURE: &str =
    "mutation($session: String!, $tasks: JSON!) { configure(session: $session, tasks: $tasks) { version } }";

const FIRE: &str = "mutation($session: String!, $trigger: String!, $kwargs: JSON) \
     { fire(session: $session, trigger: $trigger, kwargs: $kwargs) { event { seq } } }";

/// `triggers loadgen`.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent clients, each with one request in flight at a time.
    #[arg(
        long,
        env = "TRIGGERS_LOADGEN_CLIENTS",
        hide_env_values = true,
        default_value_t = 1
    )]
    pub clients: usize,
    /// Sessions the fires are spread over (configured before the clock starts).
    #[arg(
        long,
        env = "TRIGGERS_LOADGEN_SESSIONS",
        hide_env_values = true,
        default_value_t = 32
    )]
    pub sessions: usize,
    /// How long to fire, in seconds.
    #[arg(
        long,
        env = "TRIGGERS_LOADGEN_DURATION",
        hide_env_values = true,
        default_value_t = 10
    )]
    pub duration: u64,
    /// Prefix of the session UIDs (default: `loadgen:<random>:`, fresh each run).
    #[arg(long, env = "TRIGGERS_LOADGEN_PREFIX", hide_env_values = true)]
    pub prefix: Option<String>,
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `triggers loadgen`.
pub(super) async fn run(args: LoadgenArgs) -> Result<(), CliError> {
    if args.clients == 0 || args.sessions == 0 || args.duration == 0 {
        return Err(CliError::Usage(
            "--clients, --sessions and --duration must be at least 1".into(),
        ));
    }
    let client = Arc::new(Client::new(&args.server)?);
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        format!(
            "loadgen:{}:",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let sessions: Arc<Vec<String>> =
        Arc::new((0..args.sessions).map(|i| format!("{prefix}{i}")).collect());
    let tasks = questionnaire();
    for session in sessions.iter() {
        client
            .request(CONFIGURE, json!({"session": session, "tasks": tasks}))
            .await?;
    }
    // Each session's next step, shared in case clients outnumber sessions.
    let steps: Arc<Vec<AtomicUsize>> =
        Arc::new((0..args.sessions).map(|_| AtomicUsize::new(0)).collect());

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let client = client.clone();
            let sessions = sessions.clone();
            let steps = steps.clone();
            let clients = args.clients;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut turn = 0usize;
                while Instant::now() < deadline {
                    let index = (c + turn * clients) % sessions.len();
                    turn += 1;
                    let step = steps[index].fetch_add(1, Ordering::Relaxed);
                    let variables = json!({
                        "session": sessions[index],
                        "trigger": JOURNEY[step % JOURNEY.len()],
                        "kwargs": {"client": c, "step": step},
                    });
                    let sent = Instant::now();
                    match client.request(FIRE, variables).await {
                        Ok(_) => tally.latencies.push(sent.elapsed()),
                        Err(err) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| err.to_string());
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle.await.map_err(|err| CliError::Http {
            context: "a load client stopped".into(),
            message: err.to_string(),
        })?;
        total.latencies.extend(tally.latencies);
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed();
    print_report(&args, &mut total, elapsed);
    Ok(())
}

fn print_report(args: &LoadgenArgs, total: &mut Tally, elapsed: Duration) {
    total.latencies.sort_unstable();
    let fires = total.latencies.len();
    let rate = fires as f64 / elapsed.as_secs_f64();
    let ms = |p: f64| percentile(&total.latencies, p).as_secs_f64() * 1e3;
    println!(
        "clients {}  sessions {}  elapsed {:.1} s  fires {fires}  errors {}  fires/s {rate:.1}",
        args.clients,
        args.sessions,
        elapsed.as_secs_f64(),
        total.errors
    );
    println!(
        "latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(50.0),
        ms(95.0),
        ms(99.0),
        ms(100.0)
    );
    if let Some(error) = &total.first_error {
        println!("first error: {error}");
    }
}

/// The `p`-th percentile (0..=100) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
